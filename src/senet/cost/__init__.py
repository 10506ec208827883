"""Cost of a network: parameters, multiply-adds, bytes moved, and measured speed."""
