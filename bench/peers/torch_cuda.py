"""PyTorch on CUDA for bench/cuda.lua: ResNet34 training samples/s and
torchaudio log-mel clips/s, same shapes and settings as the machrt side."""
import time

try:
    import torch
    import torchvision
except ImportError:
    print("torch    (python3-torch / torchvision not installed: no peer)")
    raise SystemExit(0)
if not torch.cuda.is_available():
    print("torch    (no CUDA device visible to PyTorch: no peer)")
    raise SystemExit(0)

dev = torch.device("cuda")
batch, steps, rounds = 32, 5, 3


def best_of(n, fn):
    best = float("inf")
    for _ in range(n):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


torch.manual_seed(0)
model = torchvision.models.resnet34(num_classes=4)
model.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
model = model.to(dev).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
loss_fn = torch.nn.BCEWithLogitsLoss()
x = torch.randn(batch, 1, 128, 431, device=dev)
y = torch.zeros(batch, 4, device=dev)
y[torch.arange(batch), torch.arange(batch) % 4] = 1


def train_steps():
    for _ in range(steps):
        opt.zero_grad(set_to_none=False)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()


train_steps()
t = best_of(rounds, train_steps)
print(f"torch   cuda training   {batch * steps / t:8.1f} samples/s")

try:
    import torchaudio
except ImportError:
    print("torch    (torchaudio not installed: no log-mel peer)")
    raise SystemExit(0)
mel = torch.nn.Sequential(
    torchaudio.transforms.MelSpectrogram(sample_rate=22050, n_fft=2048, hop_length=512, n_mels=128),
    torchaudio.transforms.AmplitudeToDB(top_db=None),
).to(dev)
wave = torch.randn(batch, 220500, device=dev)
with torch.no_grad():
    mel(wave)
    t = best_of(rounds, lambda: mel(wave))
print(f"torch   cuda log-mel    {batch / t:8.1f} clips/s")
