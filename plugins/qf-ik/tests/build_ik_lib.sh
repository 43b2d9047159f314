#!/usr/bin/env bash
# Build ik_llama.cpp's libggml (its C quantizers) from the ik-llama-cpp-python 0.1.5 sdist on PyPI (the one ik tree the
# package registries carry; see REFERENCE.md for its commit and what that means for the comparisons) into $1/libggml.so
# (tox -e ik: tests/test_vs_c.py compares qf-ik with it on fresh random rows).  CPU only, x86-64 with AVX2/FMA/F16C
# (ik's CPU code needs AVX2), no FMA contraction, without ik's flash-attention kernels (quantizing never calls them).
set -euo pipefail
out="$1"
if [ -f "$out/libggml.so" ]; then exit 0; fi
work="$out/src"
mkdir -p "$work"
python -m pip download --no-deps --no-binary :all: --no-cache-dir -d "$work" ik-llama-cpp-python==0.1.5 >/dev/null
tar -xzf "$work"/ik_llama_cpp_python-0.1.5.tar.gz -C "$work"
cmake -S "$work/ik_llama_cpp_python-0.1.5/vendor/ik_llama.cpp" -B "$out/build" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
    -DGGML_IQK_FLASH_ATTENTION=OFF -DGGML_IQK_FA_ALL_QUANTS=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DCMAKE_C_FLAGS=-ffp-contract=off -DCMAKE_CXX_FLAGS=-ffp-contract=off >/dev/null
cmake --build "$out/build" --target ggml -j "$(nproc)" >/dev/null
cp "$out/build/ggml/src/libggml.so" "$out/"
rm -rf "$work" "$out/build"
