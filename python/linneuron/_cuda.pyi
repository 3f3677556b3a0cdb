"""Type stubs for linneuron._cuda, the CUDA kernels (device pointers are ints, strides are in elements; the last two
arguments of each kernel are the CUDA device index and the cudaStream_t as an int)."""

FLOAT32: int
FLOAT64: int
FLOAT16: int
BFLOAT16: int

def gemm(
    dtype: int, m: int, n: int, k: int,
    a: int, a_rs: int, a_cs: int,
    b: int, b_rs: int, b_cs: int,
    c: int, c_rs: int, c_cs: int,
    bias: int, bias_stride: int, accumulate: bool, step: bool,
    device: int, stream: int,
) -> None: ...  # fmt: skip
def step_forward(
    dtype: int, rows: int, cols: int, src: int, src_rs: int, src_cs: int, out: int, out_rs: int, out_cs: int,
    device: int, stream: int,
) -> None: ...  # fmt: skip
def step_backward(
    dtype: int, rows: int, cols: int,
    z: int, z_rs: int, z_cs: int,
    grad_y: int, gy_rs: int, gy_cs: int,
    grad_z: int, gz_rs: int, gz_cs: int,
    surrogate: int, alpha: float,
    device: int, stream: int,
) -> None: ...  # fmt: skip
def bias_grad(
    dtype: int, m: int, n: int, dy: int, dy_rs: int, dy_cs: int, db: int, db_stride: int, accumulate: bool,
    device: int, stream: int,
) -> None: ...  # fmt: skip
def availability_error() -> str: ...
def device_count() -> int: ...
def runtime_version() -> str: ...
