// Shared test setup: a fixed umask so file-mode assertions do not depend on the caller's shell.
process.umask(0o022);
