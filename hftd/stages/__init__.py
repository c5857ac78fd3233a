"""The four pipeline stages, one agent class each."""

from .dispatcher import Dispatcher
from .executor import Executor
from .producer import Producer
from .strategy import StrategyStage

ROLES = {"producer": Producer, "dispatcher": Dispatcher, "strategy": StrategyStage,
         "executor": Executor}
