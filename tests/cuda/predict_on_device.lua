-- Prediction on the CUDA device against the CPU: infer.load_run and
-- infer.load_scorer with {device = "cuda"} (weights loaded on the host, then
-- moved; front end and model on the device, probabilities back on the host),
-- "auto", scripts/predict.lua --device and a packaged scorer's score.lua
-- (auto). Probabilities must agree within 1e-4.
-- Run by the backend-parity suite as `<host> tests/cuda/predict_on_device.lua <host>`
-- with a host that has the CUDA backend (emulated in `make test`).
local mt = require "machrt"
local sys = require "machrt.sys"
local audio = require "machrt.audio"
local infer = require "machrt.infer"
local pipeline = require "machrt.pipeline"
local train = require "machrt.train"
local optim = require "machrt.optim"

local host = assert(arg[1], "usage: predict_on_device.lua <machrt host with CUDA>")
local function check(cond, msg) if not cond then error(msg, 2) end end
assert(mt.cuda_available(), "no cuda backend")

local CLASSES = { "fan", "pump", "slider", "valve" }
local tmp = os.tmpname()
os.remove(tmp)
sys.mkdir(tmp)

local cfg = {
    architecture = { backbone = "resnet18", pool = "GeM", dropout = 0, width = 4, pretrained = false },
    audio = { sample_rate = 8000, stft_window_size = 512, hop_size = 256, mel_frequency_bins = 32,
                        minimum_frequency = 50, maximum_frequency = 4000, spectrogram_normalization = "No",
                        channel = 1 },
    prediction = { inference_chunk_method = "Fix", inference_chunk_seconds = 2,
                                  max_inference_chunk_seconds = 600 },
    dataset = { audio_column = "audio" },
}
mt.manual_seed(7)
local model = pipeline.build_model(cfg.architecture, #CLASSES)
for name, t in pairs(model:state_dict()) do
    if name:match("running_var$") then t:uniform_(0.5, 2) end
    if name:match("running_mean$") then t:uniform_(-0.5, 0.5) end
end
local run_dir = tmp .. "/run"
train.write_config(run_dir, cfg)
train.save_checkpoint(run_dir, model, optim.AdamW(model:parameters()),
                                            { epoch = 1, step = 1, history = {}, classes = CLASSES })
local scorer_dir = train.build_scorer(run_dir, cfg, model, CLASSES)

local files = {}
for k, secs in ipairs{ 6, 4.5, 1.2, 9 } do
    files[k] = string.format("%s/clip%d.wav", tmp, k)
    mt.manual_seed(k)
    audio.save(files[k], mt.randn{ 1, math.floor(secs * 16000) } * 0.1, 16000)
end

local function predict(p, batch)
    local out = {}
    infer.predict_files(p, files, { batch_chunks = batch, on_result = function(r) out[#out + 1] = r end })
    return out
end

local worst = 0
local function compare(got, want, what)
    check(#got == #want, what .. ": results")
    for k, r in ipairs(got) do
        check(r.chunks == want[k].chunks, what .. ": chunks of " .. files[k])
        for c = 1, #CLASSES do
            local d = math.abs(r.probs[c] - want[k].probs[c])
            worst = math.max(worst, d)
            check(d <= 1e-4, ("%s: file %d class %d: %.7f against %.7f on the cpu"):format(
                what, k, c, r.probs[c], want[k].probs[c]))
        end
        check(r.label == want[k].label, what .. ": label of " .. files[k])
    end
end

-- The library: run folder and scorer, cuda / auto / cpu.
local cpu = infer.load_run(run_dir, { device = "cpu" })
check(cpu.device == "cpu" and cpu.model.device ~= "cuda", "cpu predictor")
local want = predict(cpu, 3)
local gpu = infer.load_run(run_dir, { device = "cuda" })
check(gpu.device == "cuda", "device of the predictor")
for _, e in ipairs(gpu.model:parameters()) do
    check(e.param:device() == "cuda", "parameter " .. e.name .. " on the device")
end
local before = mt.memory_stats().cuda.mallocs
compare(predict(gpu, 3), want, "load_run cuda, batch 3")
compare(predict(gpu, 32), want, "load_run cuda, batch 32")
compare(predict(gpu, 32), want, "load_run cuda, batch 32, second pass")
collectgarbage() -- device tensors of the first passes go back to the cache
local again = mt.memory_stats().cuda.mallocs
compare(predict(gpu, 32), want, "load_run cuda, batch 32 again")
check(mt.memory_stats().cuda.mallocs == again, ("%d cudaMalloc calls on a repeated prediction"):format(mt.memory_stats().cuda.mallocs - again))
check(again >= before, "allocation counter")
check(infer.load_run(run_dir, { device = "auto" }).device == "cuda", "auto = cuda when available")
check(infer.load_run(run_dir).device == "cpu", "the library's default stays the cpu")
local ok, err = pcall(infer.load_run, run_dir, { device = "tpu" })
check(not ok and tostring(err):find("auto, cpu or cuda", 1, true), "bad device: " .. tostring(err))
local sc = infer.load_scorer(scorer_dir, { device = "cuda" })
check(sc.device == "cuda", "scorer on the device")
compare(predict(sc, 8), want, "load_scorer cuda")

-- scripts/predict.lua --device, and the scorer's score.lua (auto).
local function csv_probs(text)
    local rows = {}
    for line in text:gmatch("[^\n]+") do
        if not line:match("^file,") then
            local cells = {}
            for c in (line .. ","):gmatch("([^,]*),") do cells[#cells + 1] = c end
            local probs = {}
            for c = 1, #CLASSES do probs[c] = tonumber(cells[2 + c]) end
            rows[#rows + 1] = { file = cells[1], label = cells[2], probs = probs, chunks = tonumber(cells[#CLASSES + 3]) }
        end
    end
    return rows
end
local function sh(cmd)
    local p = assert(io.popen(cmd .. " 2>" .. tmp .. "/stderr"))
    local out = p:read("a")
    local good = p:close()
    local f = assert(io.open(tmp .. "/stderr"))
    local errtext = f:read("a")
    f:close()
    check(good, cmd .. " failed:\n" .. errtext)
    return out, errtext
end
local inputs = {}
for k, f in ipairs(files) do inputs[k] = "--input " .. f end
local base = host .. " scripts/predict.lua --run " .. run_dir .. " " .. table.concat(inputs, " ")
local out_cpu, e_cpu = sh(base .. " --device cpu")
local out_gpu, e_gpu = sh(base .. " --device cuda")
local out_auto, e_auto = sh(base)
check(e_cpu:find("on cpu", 1, true), "predict.lua --device cpu:\n" .. e_cpu)
check(e_gpu:find("on cuda", 1, true), "predict.lua --device cuda:\n" .. e_gpu)
check(e_auto:find("on cuda", 1, true), "predict.lua default (auto):\n" .. e_auto)
local rows_cpu = csv_probs(out_cpu)
for k, r in ipairs(rows_cpu) do
    for c = 1, #CLASSES do
        check(math.abs(r.probs[c] - want[k].probs[c]) <= 5e-6, "predict.lua --device cpu against the library") -- 6 decimals in the CSV
    end
end
compare(csv_probs(out_gpu), rows_cpu, "predict.lua --device cuda")
compare(csv_probs(out_auto), rows_cpu, "predict.lua --device auto")
local out_score = sh(host .. " " .. scorer_dir .. "/score.lua " .. table.concat(files, " "))
compare(csv_probs(out_score), rows_cpu, "score.lua")

os.execute("rm -rf '" .. tmp .. "'")
print(("predict on device: ok (%d files, largest probability difference %.2g)"):format(#files, worst))
