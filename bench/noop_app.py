"""The HTTP baseline: the same stack (FastAPI + uvicorn) doing nothing with the body."""

from fastapi import FastAPI, Request, Response

app = FastAPI()


@app.post("/noop")
async def noop(request: Request) -> Response:
    await request.body()
    return Response(b'{"accepted":0}', media_type="application/json")
