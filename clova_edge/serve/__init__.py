"""`clova-edge serve`: an OpenAI-compatible HTTP server over one loaded model.

Install: pip install '.[serve]'.

    app.py       the Starlette app: routes, API key, body limits, errors in OpenAI's shape, SSE streaming
    requests.py  the request bodies (pydantic), validated and turned into prompts and GenerationSettings
    worker.py    admission (slots and a bounded queue) and the threads that run generations on one
                 runtime.batch.BatchRunner, so that their decode steps are batched
"""
