"""`python -m distill` (also what `accelerate launch -m distill` / `torchrun -m distill` run)."""

from distill.cli import main

raise SystemExit(main())
