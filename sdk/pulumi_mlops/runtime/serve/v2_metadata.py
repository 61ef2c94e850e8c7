"""The served model's Open Inference Protocol metadata (``GET /v2/models/{name}``) and its name
in V2 paths.

Model metadata carries, besides the spec's fields, ``parameters`` as MLServer does: the model
URI, registered name, version, alias, run id, whether the fast path is on, and the
``content_type`` the inputs are decoded with (`pulumi_mlops.runtime.serve.v2_input`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from pulumi_mlops.runtime.serve._v2_datatypes import COLUMN_DATATYPES, PREDICT, datatype_of
from pulumi_mlops.runtime.serve.v2_input import default_content_type

if TYPE_CHECKING:
    from pulumi_mlops.runtime.serve.model import ServedModel

__all__ = ["ModelMetadata", "model_metadata", "served_name"]


def served_name(model: ServedModel) -> str:
    """The model's name in V2 paths: the registered name, else the URI's last segment."""
    if model.info.name:
        return model.info.name
    tail = model.info.uri.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return tail or "model"


@dataclass(frozen=True)
class ModelMetadata:
    """What ``GET /v2/models/{name}`` answers.

    Attributes:
        name: The model's name in paths.
        version: Its registered version, if any.
        platform: ``mlflow_<flavor>``.
        inputs: Input tensors (name, datatype, shape).
        outputs: Output tensors, from the signature (empty without one).
        parameters: The model URI, registered name, version, alias, run id, fast path and
            the request content type.
    """

    name: str
    version: str | None
    platform: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    parameters: dict[str, str | bool]

    def document(self) -> dict[str, Any]:
        """The JSON document."""
        doc: dict[str, Any] = {"name": self.name}
        if self.version is not None:
            doc["versions"] = [self.version]
        doc.update(platform=self.platform, inputs=self.inputs, outputs=self.outputs,
                   parameters=self.parameters)
        return doc


def model_metadata(model: ServedModel) -> ModelMetadata:
    """The model's V2 metadata: inputs from its signature, outputs and flavor from MLmodel."""
    mlmodel = model.mlmodel
    signature = model.signature
    if signature.columns is not None:
        inputs = [_tensor_doc(c.name, _column_datatype(c.type), [-1]) for c in signature.columns]
    elif signature.tensors is not None:
        inputs = [_tensor_doc(t.name or f"input-{i}", _dtype_datatype(t.dtype), list(t.shape))
                  for i, t in enumerate(signature.tensors)]
    else:
        inputs = []
    outputs_json = (mlmodel.get("signature") or {}).get("outputs")
    outputs = _output_docs(orjson.loads(outputs_json)) if outputs_json else []
    flavors = mlmodel.get("flavors") or {}
    loader = str((flavors.get("python_function") or {}).get("loader_module", ""))
    flavor = loader.split(".")[1] if loader.startswith("mlflow.") else (
        "sklearn" if model.fast_predict is not None else "pyfunc")
    info = model.info
    parameters: dict[str, str | bool] = {
        key: value for key, value in (
            ("model_uri", info.uri), ("model_name", info.name),
            ("model_version", info.version), ("model_alias", info.alias),
            ("run_id", info.run_id)) if value is not None}
    parameters["fast_path"] = model.fast_predict is not None
    parameters["content_type"] = default_content_type(model)
    return ModelMetadata(served_name(model), info.version, f"mlflow_{flavor}", inputs, outputs,
                         parameters)


def _tensor_doc(name: str, datatype: str, shape: list[int]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape}


def _column_datatype(kind: str) -> str:
    return COLUMN_DATATYPES.get(kind, "BYTES")


def _dtype_datatype(name: str) -> str:
    """The datatype of a signature's numpy dtype name (BYTES for strings and objects)."""
    try:
        return datatype_of(np.dtype(name))
    except (TypeError, ValueError):
        return "BYTES"


def _output_docs(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    docs = []
    for i, spec in enumerate(specs):
        unnamed = PREDICT if len(specs) == 1 else f"output-{i}"
        if spec.get("type") == "tensor":
            tensor = spec["tensor-spec"]
            docs.append(_tensor_doc(str(spec.get("name") or unnamed),
                                    _dtype_datatype(str(tensor["dtype"])), list(tensor["shape"])))
        else:
            docs.append(_tensor_doc(str(spec.get("name") or unnamed),
                                    _column_datatype(str(spec.get("type"))), [-1]))
    return docs
