"""captum's Gaussian noise for many noisy copies, drawn a chunk of rows at a time with the numbers
captum draws for the whole tensor at once.

captum draws the noise of each input as one tensor, torch.normal(0, stdev) of shape (rows, ...) on the
global generator, input after input. On the CPU, torch fills a normal tensor of 16 or more
elements in blocks of 16 (uniforms, then Box-Muller on each block; a size that is not a multiple of
16 redraws its last 16 elements), so blocks whose sizes are multiples of 16, the last one at least 16
elements, concatenate to exactly the whole draw and leave the generator where the whole draw leaves
it (tests/test_captum_gradient_family.py checks this bit for bit). Each input's stream gets its own
generator, started where captum starts that input's draw (the earlier inputs' draws are made and
discarded, block by block), and the global generator is left where captum leaves it. Other devices
(Philox offsets per call): each input's noise is drawn whole on the first request.
"""
from __future__ import annotations

import torch

BLOCK_ELEMENTS = 1 << 20  # numbers drawn (and discarded) at a time when skipping


def _normal(n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """n standard normals in the default float dtype (captum's noise dtype: torch.tensor(stdev)'s)."""
    return torch.randn(n, generator=generator, dtype=torch.get_default_dtype(), device=device)


class NormalStream:
    """torch.normal(0, std) noise of shape (rows, *shape) in the default float dtype (captum's std is
    torch.tensor(stdev)), handed out rows at a time in order. generator: where this input's draw starts."""

    def __init__(self, rows: int, shape: tuple[int, ...], std: float, device, generator: torch.Generator):
        self.shape, self.width = tuple(shape), max(1, int(torch.Size(shape).numel()))
        self.total = rows * self.width
        self.std = torch.tensor(std, device=device)
        self.device, self.generator = torch.device(device), generator
        self.drawn = 0
        self.pending = torch.empty(0, dtype=self.std.dtype, device=device)

    def take(self, rows: int) -> torch.Tensor:
        """The next rows of noise (rows, *shape), scaled by std as captum's torch.normal."""
        want = rows * self.width
        while self.pending.numel() < want:
            self.pending = torch.cat([self.pending, self._draw(want - self.pending.numel())])
        out, self.pending = self.pending[:want], self.pending[want:]
        # torch.normal(0, std_tensor) is normal_(0, 1) times std, plus 0 (aten's normal_out_impl)
        return out.reshape(rows, *self.shape).mul(self.std)

    def _draw(self, need: int) -> torch.Tensor:
        left = self.total - self.drawn
        if self.device.type != "cpu" or left < 32:
            n = left
        else:
            n = min(left, -(-need // 16) * 16)  # a multiple of 16 ...
            if left - n < 16:  # ... unless what would remain is too short to be a block of its own
                n = left
        self.drawn += n
        return _normal(n, self.generator, self.device)


def _skip(generator: torch.Generator, n: int, device) -> None:
    """Advance generator past a whole draw of n normals (in aligned blocks, as NormalStream)."""
    if device.type != "cpu" or n < 32:
        _normal(n, generator, device)
        return
    done = 0
    while done < n:
        k = min(BLOCK_ELEMENTS, n - done)
        if n - done - k < 16:
            k = n - done
        _normal(k, generator, device)
        done += k


def captum_noise(rows: int, shapes, stds, device) -> list[NormalStream]:
    """One NormalStream per input (shapes: per-example shapes; stds: per-input floats) drawing what
    captum's NoiseTunnel._add_noise_to_inputs draws for `rows` noisy rows of each input; the global
    generator of `device` is moved to where captum's draws leave it."""
    device = torch.device(device)
    default = torch.cuda.default_generators[device.index or 0] if device.type == "cuda" else torch.default_generator
    state = default.get_state()
    streams = []
    for shape, std in zip(shapes, stds):
        g = torch.Generator(device=device)
        g.set_state(state)
        streams.append(NormalStream(rows, shape, std, device, g))
        ahead = torch.Generator(device=device)
        ahead.set_state(state)
        _skip(ahead, rows * max(1, int(torch.Size(shape).numel())), device)
        state = ahead.get_state()
    default.set_state(state)
    return streams
