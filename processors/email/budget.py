"""The email provider's request budget: the group's time slots of `processors.slots`.

Resend's team limit (`RESEND_RATE_LIMIT_PER_S`) is one `SlotBudget` for the processes of
the email consumer groups; the model's budget (`processors.ads.budget`) uses the same
mechanism. Kept as the email code's import path.
"""

from processors.slots import DEFAULT_MARGIN_S, BudgetStats, SlotBudget

__all__ = ["DEFAULT_MARGIN_S", "BudgetStats", "SlotBudget"]
