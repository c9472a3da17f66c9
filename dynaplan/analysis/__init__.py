"""Model-error analysis, learning curves and figures."""
