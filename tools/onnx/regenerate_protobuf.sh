#!/usr/bin/env bash
# Regenerates Sources/Diffuse8ONNX/onnx.pb.swift from ONNX's onnx.proto. Needed only when the ONNX schema the
# exporter writes changes; the generated file is committed so that building never needs protoc or the plugin.
#
# Uses: protoc from the PyPI package grpcio-tools, onnx.proto from the PyPI package onnx (pinned below), and
# protoc-gen-swift built from the swift-protobuf version Package.swift resolves (its build takes a few minutes).
set -euo pipefail
cd "$(dirname "$0")/../.."
ONNX_VERSION=${ONNX_VERSION:-1.23.2}
WORK=${WORK:-$(mktemp -d)}
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q "onnx==$ONNX_VERSION" grpcio-tools
PROTO_DIR=$("$WORK/venv/bin/python" -c 'import onnx, os; print(os.path.dirname(onnx.__file__))')

swift package resolve
PROTOBUF_CHECKOUT=.build/checkouts/swift-protobuf
# Built in the scratch folder, so the resolved checkout stays untouched.
swift build -c release --package-path "$PROTOBUF_CHECKOUT" --scratch-path "$WORK/plugin-build" --product protoc-gen-swift
PLUGIN=$(swift build -c release --package-path "$PROTOBUF_CHECKOUT" --scratch-path "$WORK/plugin-build" --show-bin-path)/protoc-gen-swift

cp "$PROTO_DIR/onnx.proto" "$WORK/onnx.proto"
"$WORK/venv/bin/python" -m grpc_tools.protoc --plugin=protoc-gen-swift="$PLUGIN" -I "$WORK" \
    --swift_out="$WORK" --swift_opt=Visibility=Internal "$WORK/onnx.proto"
cp "$WORK/onnx.pb.swift" Sources/Diffuse8ONNX/onnx.pb.swift
echo "wrote Sources/Diffuse8ONNX/onnx.pb.swift from onnx $ONNX_VERSION's onnx.proto"
