"""The ceiling for benchmarks/load.py: a FastAPI endpoint that does nothing."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def nothing() -> dict[str, str]:
    return {"status": "ok"}
