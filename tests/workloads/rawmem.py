# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
"""PyMem_RawMalloc / PyMem_RawRealloc / PyMem_RawFree called through ctypes,
for the workloads that allocate in the raw domain without the GIL (a CDLL
call releases it). ctypes is warmed up at import, before anything is traced.
"""

import ctypes

_lib = ctypes.CDLL(None)
RAW_MALLOC = _lib.PyMem_RawMalloc
RAW_MALLOC.restype = ctypes.c_void_p
RAW_MALLOC.argtypes = [ctypes.c_size_t]
RAW_REALLOC = _lib.PyMem_RawRealloc
RAW_REALLOC.restype = ctypes.c_void_p
RAW_REALLOC.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
RAW_FREE = _lib.PyMem_RawFree
RAW_FREE.restype = None
RAW_FREE.argtypes = [ctypes.c_void_p]
RAW_FREE(RAW_MALLOC(16))
