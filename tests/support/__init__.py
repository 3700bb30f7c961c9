"""What tests share that is no test: fakes of refit's collaborators, drivers of the real services."""
