-- `make bench CUDA=1`: throughput on the CUDA device, next to PyTorch on
-- the same device when python3-torch with CUDA is installed.
--   training samples/s: ResNet34 (1 x 128 x 431 inputs, batch 32, AdamW)
--   log-mel clips/s:    10 s clips at 22050 Hz -> 128 x 431 (batches of 32);
--                       machrt's front end runs on the CPU (FFTW) in this
--                       version, PyTorch's (torchaudio) on the GPU.
-- Each side keeps the best of its rounds; the device is synchronised
-- around every timed region.
local mt = require "machrt"
local nn = require "machrt.nn"
local optim = require "machrt.optim"
local audio = require "machrt.audio"

if not mt.cuda_available() then
    print("bench/cuda.lua: no CUDA device (build with make CUDA=1 on a machine with a GPU)")
    return
end

local batch, steps, rounds = 32, 5, 3

local function best_of(n, fn)
    local best = math.huge
    for _ = 1, n do
        mt.cuda_synchronize()
        local t0 = mt.clock()
        fn()
        mt.cuda_synchronize()
        best = math.min(best, mt.clock() - t0)
    end
    return best
end

-- Training -----------------------------------------------------------------
mt.manual_seed(0)
local model = nn.resnet34{in_channels = 1, num_classes = 4, pool = "gem"}:flatten_parameters():to("cuda")
model:training()
local opt = optim.AdamW(model:parameters(), {lr = 1e-3, weight_decay = 1e-2})
local loss_fn = nn.BCEWithLogitsLoss()
local x = mt.randn{batch, 1, 128, 431}:to("cuda")
local y = mt.zeros{batch, 4}
for i = 1, batch do y:set(1, i, (i - 1) % 4 + 1) end
y = y:to("cuda")
local function train_steps()
    for _ = 1, steps do
        model:zero_grad()
        local out = model:forward(x)
        loss_fn:forward(out, y)
        model:backward(x, loss_fn:backward(out, y))
        opt:step()
    end
end
train_steps() -- warm-up: the caching allocator fills here
local mallocs = mt.memory_stats().cuda.mallocs
local t = best_of(rounds, train_steps)
print(("machrt  cuda training   %8.1f samples/s  (cudaMalloc calls after warm-up: %d)"):format(
    batch * steps / t, mt.memory_stats().cuda.mallocs - mallocs))

-- Log-mel front end -----------------------------------------------------------
local mel = audio.MelSpectrogram{sample_rate = 22050, n_fft = 2048, hop_length = 512, n_mels = 128}
local wave = mt.randn{batch, 220500}
local tm = best_of(rounds, function() audio.amplitude_to_db(mel:forward(wave)) end)
print(("machrt  cpu log-mel     %8.1f clips/s"):format(batch / tm))

-- PyTorch on the same device ---------------------------------------------------
local peer = io.popen("python3 bench/peers/torch_cuda.py 2>&1")
if peer then
    for line in peer:lines() do print(line) end
    peer:close()
end
