"""The server's routes, one router per API area: completions, chat, models/admin (models, health,
tokenizer endpoints) and metrics. Handlers are module-level and find the engine in ``app.state``."""

from . import chat, completions, metrics, models

ROUTERS = (completions.router, chat.router, models.router, metrics.router)

__all__ = ["ROUTERS"]
