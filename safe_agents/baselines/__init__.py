"""The baselines the papers compare with."""

from safe_agents.baselines.bc import BCAll, BCConfig, BCSafe, BCSafeConfig
from safe_agents.baselines.bcq_lag import BCQLag, BCQLagConfig
from safe_agents.baselines.cdt import CDT, CDTConfig, CDTContext
from safe_agents.baselines.coptidice import COptiDICE, COptiDICEConfig
from safe_agents.baselines.cpq import CPQ, CPQConfig

__all__ = [
    "BCAll",
    "BCConfig",
    "BCSafe",
    "BCSafeConfig",
    "BCQLag",
    "BCQLagConfig",
    "CDT",
    "CDTConfig",
    "CDTContext",
    "CPQ",
    "CPQConfig",
    "COptiDICE",
    "COptiDICEConfig",
]
