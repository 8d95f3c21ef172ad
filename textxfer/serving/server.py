"""``textxfer serve``: a FastAPI app that predicts with one loaded model, batching across requests.

Endpoints: ``POST /predict``, ``POST /explain`` (each word's contribution to the predicted label), ``GET /health``,
``GET /model``, ``GET /`` (a small web page that highlights those words),
``GET /docs`` (OpenAPI). Every error is JSON ``{"error": "<one line>"}``: 413 for too many texts, a
too long text or a too large body; 422 for malformed JSON, wrong types, a missing field or an empty
list; 500 only for a fault of the server itself.
"""

from __future__ import annotations

import asyncio
import json
import os
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from textxfer.serving.batching import MicroBatcher
from textxfer.classifier import load, to_predictions
from textxfer.errors import TextxferError
from textxfer.core.manifest import read_manifest

SETTINGS_ENV = "TEXTXFER_SERVE_SETTINGS"


@dataclass
class ServeSettings:
    """What the server serves and its limits (the ``textxfer serve`` flags)."""

    model: str
    max_batch_size: int = 32
    batch_window_ms: float = 5.0
    batching: bool = True
    max_texts: int = 64
    max_text_chars: int = 10_000
    device: str = "auto"
    precision: str = "auto"
    max_explain_texts: int = 8  # texts per POST /explain (each costs many predictions)

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_texts", "max_text_chars", "max_explain_texts"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TextxferError(f"--{name.replace('_', '-')} must be a whole number of at least 1, got {value!r}")
        window = self.batch_window_ms
        if isinstance(window, bool) or not isinstance(window, (int, float)) or not 0 <= window <= 10_000:
            raise TextxferError(f"--batch-window-ms must be between 0 and 10000 milliseconds, got {window!r}")

    @property
    def max_body_bytes(self) -> int:
        """Room for the largest allowed request even with every character JSON-escaped (``\\uXXXX``)."""
        return self.max_texts * self.max_text_chars * 6 + 65_536


class PredictRequest(BaseModel):
    """Either ``texts`` (a list) or ``text`` (one); for a model of text pairs each is a ``["text", "second text"]``
    list."""

    model_config = ConfigDict(extra="forbid")
    texts: list[StrictStr | list[StrictStr]] | None = Field(
        default=None, description="texts to classify, in order (a pair model: [text, second text] lists)")
    text: StrictStr | list[StrictStr] | None = Field(default=None, description="one text (or pair) instead of texts")


class PredictionOut(BaseModel):
    label: str | int | None = Field(default=None, description="the most probable label (single-label models)")
    score: float | None = Field(default=None, description="probability of that label (single-label models)")
    labels: list[str | int] | None = Field(default=None, description="multi-label models: every label whose "
                                           "probability reaches its threshold, most probable first (may be empty)")
    probabilities: dict[str, float] = Field(description="every label's probability, in label order (single-label: "
                                            "they sum to 1; multi-label: each label's own)")


class PredictResponse(BaseModel):
    predictions: list[PredictionOut]


class WordOut(BaseModel):
    word: str = Field(description="the word (a jieba word for Chinese), as it appears in the text")
    start: int = Field(description="its first character's position in the text")
    end: int = Field(description="the position after its last character")
    part: int | None = Field(default=None, description="pair models: 1 for a word of the second text")
    contribution: float = Field(description="how much it raises (+) or lowers (−) the label's probability")


class ExplanationOut(BaseModel):
    label: str | int = Field(description="the most probable label, which the words are scored for")
    score: float = Field(description="its probability")
    method: str = Field(description="integrated-gradients (fine-tuned models) or occlusion (the others)")
    words: list[WordOut]
    notes: list[str] | None = None


class ExplainResponse(BaseModel):
    explanations: list[ExplanationOut]


class RequestError(Exception):
    """A bad request: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _first_problem(exc: ValidationError | RequestValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
    return f"{where}: {error.get('msg', 'invalid value')}"


def parse_request(body: bytes, settings: ServeSettings, pair: bool = False) -> list:
    """The texts of a ``POST /predict`` body — ``(text, second text)`` tuples for a ``pair`` model — or a
    :class:`RequestError` saying what is wrong."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(422, f"the body is not valid JSON ({exc}); send {{\"texts\": [\"...\"]}}") from None
    except RecursionError:  # like the CLI's JSONL reader: a client error, not a server fault
        raise RequestError(422, "the body is JSON nested too deeply to read; send {\"texts\": [\"...\"]}") from None
    if not isinstance(payload, dict):
        raise RequestError(422, "the body must be a JSON object such as {\"texts\": [\"...\"]} or {\"text\": \"...\"}")
    try:
        request = PredictRequest.model_validate(payload)
    except ValidationError as exc:
        raise RequestError(422, _first_problem(exc)) from None
    if (request.texts is None) == (request.text is None):
        raise RequestError(422, "send exactly one of \"texts\" (a list of strings) or \"text\" (a string)")
    texts = [request.text] if request.text is not None else request.texts
    if not texts:
        raise RequestError(422, "\"texts\" is empty; send at least one text")
    if len(texts) > settings.max_texts:
        raise RequestError(413, f"{len(texts)} texts in one request; the limit is {settings.max_texts} — split the request")
    for i, text in enumerate(texts):
        if pair and not (isinstance(text, list) and len(text) == 2):
            raise RequestError(422, f"texts[{i}]: this model reads text pairs; send [\"text\", \"second text\"] "
                                    f"for each, got {json.dumps(text, ensure_ascii=False):.60}")
        if not pair and not isinstance(text, str):
            raise RequestError(422, f"texts[{i}]: this model reads single texts (it was not trained on text pairs); "
                                    "send a string for each")
        for part in text if pair else [text]:
            if len(part) > settings.max_text_chars:
                raise RequestError(413, f"text {i} has {len(part):,} characters; the limit is {settings.max_text_chars:,}")
    return [tuple(text) for text in texts] if pair else texts


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) more than ``limit`` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"the body is {int(declared):,} bytes; the limit is {limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the body is over the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def model_info(folder: Path, model) -> dict:
    """What ``GET /model`` returns: kind, labels, base model, metrics and creation time."""
    manifest = read_manifest(folder)
    metrics = {}
    if (folder / "metrics.json").is_file():
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    config = manifest.get("config") or {}
    distillation = None
    if (folder / "report.json").is_file():
        try:
            report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
            distillation = report.get("distillation") if isinstance(report, dict) else None
        except (OSError, ValueError):
            distillation = None
    from textxfer.distill.advice import serving_note

    return {"kind": manifest["kind"], "labels": [model.labels.value(n) for n in model.labels.names],
            "base_model": config.get("base_model"), "created": manifest.get("created"),
            "metrics": {split: {k: m.get(k) for k in ("n", "accuracy", "macro_f1", "micro_f1") if k in m}
                        for split, m in metrics.items()},
            "task": {"multi_label": model.labels.multi_label, "pair": model.shape.pair,
                     "text_pair_column": model.shape.text_pair_column,
                     **({"thresholds": dict(zip(map(str, model.labels.names), map(float, model.thresholds)))}
                        if model.labels.multi_label else {})},
            "folder": str(folder), "device": model.device, "precision": model.precision,
            "speed_note": serving_note(manifest["kind"], distillation)}


def create_app(settings: ServeSettings) -> FastAPI:
    """The app for ``settings.model`` (loaded now, so a bad folder fails before the server starts)."""
    folder = Path(settings.model)
    model = load(folder, settings.device, settings.precision)
    info = model_info(folder, model)
    batcher = MicroBatcher(model.predict_proba, settings.max_batch_size, settings.batch_window_ms, settings.batching)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.stop()  # uvicorn has stopped accepting and waited for in-flight requests

    app = FastAPI(title="textxfer", description=f"Text classification with {folder.name} ({info['kind']})",
                  lifespan=lifespan)
    app.state.batcher, app.state.settings = batcher, settings

    @app.exception_handler(RequestError)
    async def _bad_request(request: Request, exc: RequestError):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return JSONResponse({"error": _first_problem(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):  # a server fault, never the caller's input
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)

    schema = PredictRequest.model_json_schema()

    @app.post("/predict", response_model=PredictResponse, response_model_exclude_none=True, responses={413: {"description": "too many texts, a too long text or a too large body"},
                                                                     422: {"description": "malformed JSON, wrong types, or an empty list"}},
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}})
    async def predict(request: Request) -> dict:
        """Classify ``texts`` (or one ``text``): label, its probability, and every class's probability (multi-label:
        the labels at or above their thresholds, and every label's probability)."""
        texts = parse_request(await _read_body(request, settings.max_body_bytes), settings, model.shape.pair)
        probabilities = await batcher.submit(texts)
        return {"predictions": [_prediction_out(p) for p in to_predictions(model, probabilities)]}

    explaining = asyncio.Lock()  # one explanation at a time: each is many forward (and backward) passes

    @app.post("/explain", response_model=ExplainResponse, response_model_exclude_none=True,
              responses={413: {"description": f"more than {settings.max_explain_texts} texts, a too long text or a "
                                              "too large body"},
                         422: {"description": "malformed JSON, wrong types, or an empty list"}},
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}})
    async def explain(request: Request) -> dict:
        """Why the model predicts what it does for ``texts`` (or one ``text``): the most probable label and each word
        with its contribution to that label's probability (integrated gradients for a fine-tuned model, occlusion
        for the other kinds)."""
        texts = parse_request(await _read_body(request, settings.max_body_bytes), settings, model.shape.pair)
        if len(texts) > settings.max_explain_texts:
            raise RequestError(413, f"{len(texts)} texts to explain in one request; the limit is "
                                    f"{settings.max_explain_texts} (each costs many predictions) — split the request")
        async with explaining:
            explained = await run_in_threadpool(model.explain, texts)
        return {"explanations": [e.to_dict() for e in explained]}

    @app.get("/health")
    async def health() -> dict:
        """``{"status": "ok"}`` while the model is loaded and the batcher runs."""
        return {"status": "ok", "batching": batcher.enabled, **batcher.stats}

    @app.get("/model")
    async def model_endpoint() -> dict:
        """The served model: kind, labels, base model, metrics from its run folder."""
        return info

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return resources.files("textxfer.serving").joinpath("web/index.html").read_text(encoding="utf-8")

    return app


def _prediction_out(prediction) -> dict:
    shown = {"probabilities": {str(k): v for k, v in prediction.probabilities.items()}}
    if hasattr(prediction, "labels"):  # a MultiLabelPrediction
        return {"labels": list(prediction.labels), **shown}
    return {"label": prediction.label, "score": prediction.score, **shown}


def app_from_environment() -> FastAPI:
    """App factory for ``uvicorn --workers N`` (each worker process builds its own app and model)."""
    return create_app(ServeSettings(**json.loads(os.environ[SETTINGS_ENV])))


def serve(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          log_level: str = "info") -> None:
    """Run the server until SIGINT/SIGTERM; in-flight requests finish first (graceful shutdown)."""
    import uvicorn

    common = {"host": host, "port": port, "log_level": log_level, "timeout_graceful_shutdown": 30}
    if workers > 1:
        os.environ[SETTINGS_ENV] = json.dumps(asdict(settings))
        # Fail here, once, with a clear message, not in every worker (on the CPU: the workers take the GPU).
        from textxfer.transformer import devices

        devices.inference_precision(devices.resolve(settings.device), settings.precision)
        load(Path(settings.model), device="cpu")
        uvicorn.run("textxfer.serving.server:app_from_environment", factory=True, workers=workers, **common)
    else:
        uvicorn.run(create_app(settings), **common)
