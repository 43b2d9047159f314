#!/usr/bin/env bash
# Build llama.cpp's llama-gguf-split from the llama-cpp-python 0.3.36 sdist (the reference tree) into $1 (tox -e e2e:
# tests/app/test_split.py compares qf's split outputs with it shard for shard).  CPU only, static, generic x86-64.
set -euo pipefail
out="$1"
if [ -x "$out/bin/llama-gguf-split" ]; then exit 0; fi
work="$out/src"
mkdir -p "$work"
python -m pip download --no-deps --no-binary :all: --no-cache-dir -d "$work" llama-cpp-python==0.3.36 >/dev/null
tar -xzf "$work"/llama_cpp_python-0.3.36.tar.gz -C "$work"
cmake -S "$work/llama_cpp_python-0.3.36/vendor/llama.cpp" -B "$out/build" -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$out/build" --target llama-gguf-split -j "$(nproc)" >/dev/null
mkdir -p "$out/bin"
cp "$out/build/bin/llama-gguf-split" "$out/bin/"
rm -rf "$work" "$out/build"
