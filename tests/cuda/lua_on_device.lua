-- The Lua layer on the CUDA device, against the same work on the CPU:
-- tensor:to, element access, printing, device-mismatch errors, and a
-- training step of a net with every layer type after module:to("cuda"),
-- parameters compared.
-- Run by the backend-parity suite (tests/c/test_backend_parity.c) with a
-- host that has the CUDA backend (emulated in `make test`). Exits non-zero
-- on the first failure.
local mt = require "machrt"
local nn = require "machrt.nn"
local optim = require "machrt.optim"

local function check(cond, msg) if not cond then error(msg, 2) end end

local function max_rel_diff(a, b)
    local d = (a:to("cpu") - b:to("cpu")):abs():max()
    return d / (1 + b:to("cpu"):abs():max())
end

assert(mt.cuda_available(), "no cuda backend")

-- Tensors ------------------------------------------------------------------
mt.manual_seed(1)
local x = mt.randn{3, 5}
local g = x:to("cuda")
check(g:device() == "cuda" and x:device() == "cpu", "devices")
check(g:to("cuda") == g, "to() onto the same device returns the tensor itself")
check(max_rel_diff((g * 2 + 1):exp(), (x * 2 + 1):exp()) < 1e-6, "elementwise")
check(math.abs(g:sum() - x:sum()) < 1e-5, "sum")
check(g:get(2, 3) == x:get(2, 3), "get")
g:set(7.5, 1, 1)
check(g:get(1, 1) == 7.5 and x:get(1, 1) ~= 7.5, "set writes the device copy only")
check(#g:totable() == 3 and g:totable()[2][3] == x:get(2, 3), "totable")
check(tostring(g):find("on cuda", 1, true), "tostring names the device")
local v, i = g:max(2)
local hv, hi = g:to("cpu"):max(2)
check(max_rel_diff(v, hv) == 0 and max_rel_diff(i:to("cpu"):float(), hi:float()) == 0 and hi:get(1) >= 1, "max(d) and its 1-based indices")
local ok, err = pcall(function() return x + g end)
check(not ok and err:find("cpu", 1, true) and err:find("cuda", 1, true), "mismatch error: " .. tostring(err))
check(max_rel_diff(g:matmul(g:transpose(1, 2)), g:to("cpu"):matmul(g:to("cpu"):transpose(1, 2))) < 1e-5, "matmul")

-- A training step ------------------------------------------------------------
local function build()
    mt.manual_seed(5)
    local net = nn.Sequential{
        nn.Conv2d(1, 8, 3, {padding = 1, bias = false}),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
        nn.BasicBlock(8, 16, 2),
        nn.GeM{p = 3},
        nn.Flatten(),
        nn.Dropout(0),
        nn.Linear(16, 4),
    }
    return net:flatten_parameters()
end
local cpu_model, gpu_model = build(), build():to("cuda")
check(gpu_model.flat_params:device() == "cuda", "flat parameters moved")
mt.manual_seed(9)
local input = mt.randn{3, 1, 20, 24}
local target = mt.zeros{3, 4}
target:set(1, 1, 2); target:set(1, 2, 4); target:set(1, 3, 1)
local function step(model, inp, tgt, opt)
    model:training()
    model:zero_grad()
    local loss_fn = nn.BCEWithLogitsLoss()
    local out = model:forward(inp)
    local loss = loss_fn:forward(out, tgt)
    model:backward(inp, loss_fn:backward(out, tgt))
    opt:step()
    return loss, out
end
-- SGD: an update linear in the gradient, so rounding differences stay
-- rounding-sized (AdamW's sign-like first steps would amplify them; its
-- kernel is compared bit for bit in the C suite).
local copt = optim.SGD(cpu_model:parameters(), {lr = 0.05, momentum = 0.9})
local gopt = optim.SGD(gpu_model:parameters(), {lr = 0.05, momentum = 0.9})
for s = 1, 2 do
    local cl, cout = step(cpu_model, input, target, copt)
    local gl, gout = step(gpu_model, input:to("cuda"), target:to("cuda"), gopt)
    check(gout:device() == "cuda", "model output on the device")
    check(math.abs(cl - gl) < 1e-4 * (1 + math.abs(cl)), ("step %d loss: cpu %g cuda %g"):format(s, cl, gl))
    check(max_rel_diff(gout, cout) < 1e-3, ("step %d logits differ"):format(s))
end
check(max_rel_diff(gpu_model.flat_params, cpu_model.flat_params) < 1e-4, "parameters after two SGD steps")
local csd, gsd = cpu_model:state_dict(), gpu_model:state_dict()
check(max_rel_diff(gsd["1.running_var"], csd["1.running_var"]) < 1e-4, "running statistics")
check(gsd["1.num_batches_tracked"]:item() == 2, "num_batches_tracked on the device")
-- Saving a device model writes host copies; evaluation mode runs too.
local path = os.tmpname()
mt.save(path, gsd)
local back = mt.load(path)
os.remove(path)
check(max_rel_diff(back["8.weight"], gsd["8.weight"]) == 0, "save from the device")
gpu_model:evaluate(); cpu_model:evaluate()
check(max_rel_diff(gpu_model:forward(input:to("cuda")), cpu_model:forward(input)) < 1e-3, "evaluation forward")
gpu_model:to("cpu")
check(gpu_model.flat_params:device() == "cpu", "back to the cpu")
-- The log-mel front end on the device (cuFFT + cuBLAS) against the CPU's.
local audio = require "machrt.audio"
local mel = audio.MelSpectrogram{sample_rate = 16000, n_fft = 512, hop_length = 160, n_mels = 64}
mt.manual_seed(11)
local wave = mt.randn{2, 8000} * 0.1
local host_db = audio.amplitude_to_db(mel:forward(wave))
local dev_db = audio.amplitude_to_db(mel(wave:to("cuda")))
check(dev_db:device() == "cuda", "front end output on the device")
check(max_rel_diff(dev_db, host_db) < 1e-5, "log-mel on the device: " .. max_rel_diff(dev_db, host_db))
check(max_rel_diff(audio.amplitude_to_db(mel(wave:select(1, 1):to("cuda"))), host_db:select(1, 1)) < 1e-5, "log-mel of one clip")
-- The cosine head's margin losses on the device (K.margin_cross_entropy_*)
-- against the CPU's: loss, gradient, and AdaCos's adapted scale.
local nn = require "machrt.nn"
for _, name in ipairs{ "ArcFaceLoss", "AdaCosLoss" } do
    mt.manual_seed(5)
    local head = nn.CosineLinear(6, 4, { scale = 16 })
    local dev_head = nn.CosineLinear(6, 4, { scale = 16 })
    dev_head:load_state_dict(head:state_dict())
    dev_head:to("cuda")
    local emb, classes = mt.randn{ 5, 6 }, mt.tensor{ 1, 4, 2, 2, 3 }:long()
    local loss, dev_loss = nn[name](head), nn[name](dev_head)
    local z, dz = head:forward(emb), dev_head:forward(emb:to("cuda"))
    local l, dl = loss:forward(z, classes), dev_loss:forward(dz, classes:to("cuda"))
    check(math.abs(l - dl) < 1e-5 * (1 + math.abs(l)), ("%s loss: cpu %g cuda %g"):format(name, l, dl))
    local g, dg = loss:backward(z, classes), dev_loss:backward(dz, classes:to("cuda"))
    check(dg:device() == "cuda", name .. " gradient on the device")
    check(max_rel_diff(dg, g) < 1e-4, name .. " gradient: " .. max_rel_diff(dg, g))
    check(math.abs(head:get_scale() - dev_head:get_scale()) < 1e-4, name .. " scale")
end
print("lua on device: ok")
