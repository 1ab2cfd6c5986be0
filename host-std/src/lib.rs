//! Vspec's std shell: maps model files, tokenizes, runs the core on threads, and drives the CLI.
