#!/usr/bin/env python3
"""Checks an ONNX model and runs it in onnxruntime (CPU), the reference the export tests compare against.

    run_onnx.py MODEL.onnx INPUTS.safetensors OUTPUT.safetensors [--threads N] [--check-only]

1. onnx.checker.check_model(MODEL, full_check=True) (by path, so external data is checked too);
2. unless --check-only: one onnxruntime CPU session, fed every tensor of INPUTS (by graph input name, F32, cast
   to the input's declared type), its outputs written to OUTPUT as F32 safetensors.
With --layer-io, also the input and output of every quantized layer (named "in:<layer>" and "out:<layer>", the
layer's diffusers name): the input before SmoothQuant's Mul and the Q/DQ pair, the output after the bias.
With --count-ops, the JSON line also counts the graph's nodes by operator ("ops").
Prints one JSON line: {"checker": "ok", "outputs": N, "providers": [...]}.
`--probe` only imports onnx and onnxruntime and prints their versions (tests use it to decide whether to skip).
"""
import json
import struct
import sys

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        assert e["dtype"] == "F32", f"{path}: {name} is {e['dtype']}, expected F32"
        a, b = e["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype="<f4").reshape(e["shape"])
    return out


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        b = np.ascontiguousarray(t, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)


def layer_io(model):
    """Graph tensor names of each quantized layer's input and output, found by the exporter's node names."""
    import onnx

    m = onnx.load(model, load_external_data=False)
    by_name = {n.name: n for n in m.graph.node}
    names = {}
    for n in m.graph.node:
        for marker in ("/input_quantizer/PreQuantScale", "/input_quantizer/QuantizeLinear"):
            if n.name.endswith(marker):
                path = n.name[: -len(marker)]
                layer = path.lstrip("/").replace("/", ".")
                if "in:" + layer in names and marker.endswith("QuantizeLinear"):
                    continue  # smoothed: the input is the PreQuantScale Mul's
                names["in:" + layer] = n.input[0]
                for op in ("/Conv", "/Add", "/MatMul"):
                    if path + op in by_name:
                        names["out:" + layer] = by_name[path + op].output[0]
                        break
    return names


def main(argv):
    import onnx
    import onnxruntime as ort

    if argv[1:] == ["--probe"]:
        print(json.dumps({"onnx": onnx.__version__, "onnxruntime": ort.__version__}))
        return
    model, inputs_path, output_path = argv[1:4]
    threads = int(argv[argv.index("--threads") + 1]) if "--threads" in argv else 0
    onnx.checker.check_model(model, full_check=True)
    result = {"checker": "ok"}
    if "--count-ops" in argv:
        import collections

        graph = onnx.load(model, load_external_data=False).graph
        result["ops"] = dict(collections.Counter(n.op_type for n in graph.node))
    if "--check-only" not in argv:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        extra = layer_io(model) if "--layer-io" in argv else {}
        if extra:
            import onnx

            m = onnx.load(model)
            for tensor in extra.values():
                m.graph.output.append(onnx.helper.make_empty_tensor_value_info(tensor))
            session = ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])
        else:
            session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        types = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
        feeds = {}
        given = read_safetensors(inputs_path)
        for i in session.get_inputs():
            feeds[i.name] = given[i.name].astype(types[i.type])
        names = [o.name for o in session.get_outputs()]
        outputs = dict(zip(names, session.run(names, feeds)))
        written = {n: outputs[n] for n in names if n not in extra.values()}
        written.update({key: outputs[tensor] for key, tensor in extra.items()})
        write_safetensors(output_path, {n: o.astype(np.float32) for n, o in written.items()})
        result["outputs"] = len(written)
        result["providers"] = session.get_providers()
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv)
