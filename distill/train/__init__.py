"""Training shared by every task: the one Trainer (a task supplies its objective), step
budgets, layer losses and vocabulary trimming."""
