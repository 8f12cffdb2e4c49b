// The CUDA stream type, declared without pulling in the CUDA headers, so that
// kernel headers compile in a CPU-only build. This is how the CUDA runtime
// itself defines cudaStream_t.
#pragma once

struct CUstream_st;
using cudaStream_t = CUstream_st*;
