"""What the API, the engine and clients agree on: pydantic and the standard library only
(never torch, FastAPI or the database). The engine imports nothing else from `app`."""
