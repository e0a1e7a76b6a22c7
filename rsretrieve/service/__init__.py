"""``rsretrieve serve``: the HTTP API with a warm model (FastAPI + uvicorn), and its thin client.

Modules: ``app`` (app factory and the ``/v1`` routes), ``clip_compat`` (clip-retrieval's ``/knn-service``,
``/metadata``, ``/indices-list``), ``schemas`` (pydantic request bodies), ``indexes`` (the served indexes, their
shared models and micro-batchers), ``batching`` (``MicroBatcher``), ``metrics`` (Prometheus text), ``guard``
(API key, body limit, metrics and last-resort errors as one ASGI middleware), ``images`` (size checks before
decoding) and ``client`` (``rsretrieve query --server``: standard library only, no torch/FAISS/LanceDB).

This package's ``__init__`` imports nothing, so that the client stays light.
"""
