-- experiments/resnet34.lua trained end to end with --environment.device=cuda
-- against the same run on the CPU (a tiny corpus, width 4, one epoch): the
-- losses and the validation probabilities must be close (not bitwise: the
-- GEMMs, FFTs and reductions sum in other orders, and AdamW's first steps
-- amplify rounding), and the checkpoint written by the device run must load
-- on the CPU (weights and optimizer state) and keep training there.
-- Run by the backend-parity suite as `<host> tests/cuda/experiment_on_device.lua <host>`
-- with a host that has the CUDA backend (emulated in `make test`).
local mt = require "machrt"
local sys = require "machrt.sys"
local train = require "machrt.train"
local pipeline = require "machrt.pipeline"

local host = assert(arg[1], "usage: experiment_on_device.lua <machrt host with CUDA>")
local function check(cond, msg) if not cond then error(msg, 2) end end

local tmp = os.tmpname()
os.remove(tmp)
sys.mkdir(tmp)
local data = tmp .. "/data"
require("machrt.synth").generate(data, { clips = 12, seed = 1 })

local function read(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("a")
    f:close()
    return s
end

local function run(device)
    local out = tmp .. "/" .. device
    local args = table.concat({
        "--dataset.data_folder=" .. data, "--dataset.train_dataframe=" .. data .. "/dataset.csv",
        "--architecture.width=4", "--training.batch_size=4", "--training.epochs=1",
        "--environment.number_of_workers=1", "--environment.seed=3",
        "--audio.training_chunk_seconds=4", "--prediction.inference_chunk_seconds=5",
        "--training.run_interpretations=false", "--training.build_scoring_pipelines=false",
        "--environment.device=" .. device, "--output_directory=" .. out }, " ")
    local p = assert(io.popen(host .. " experiments/resnet34.lua " .. args .. " 2>&1"))
    local text = p:read("a")
    local ok = p:close()
    check(ok, device .. " run failed:\n" .. text)
    return out .. "/final_machinetype_audio_classification/fold4", text
end

-- val_predictions.csv: {file = {p1, p2, ...}}
local function probabilities(dir)
    local rows = {}
    local header
    for line in read(dir .. "/val_predictions.csv"):gmatch("[^\n]+") do
        local cells = {}
        for c in line:gmatch("[^,]+") do cells[#cells + 1] = c end
        if not header then
            header = cells
        else
            local p = {}
            for i, h in ipairs(header) do
                if h:match("^p_") then p[#p + 1] = tonumber(cells[i]) end
            end
            rows[cells[2]] = p
        end
    end
    return rows
end

local function log_row(dir)
    local lines = {}
    for line in read(dir .. "/log.csv"):gmatch("[^\n]+") do lines[#lines + 1] = line end
    local names, values, row = {}, {}, {}
    for c in lines[1]:gmatch("[^,]+") do names[#names + 1] = c end
    for c in lines[2]:gmatch("[^,]*") do values[#values + 1] = c end
    for i, n in ipairs(names) do row[n] = tonumber(values[i]) end
    return row
end

local gpu_dir, gpu_text = run("cuda")
local cpu_dir = run("cpu")
check(not gpu_text:find("applies on GPU only", 1, true), "the device run trained on the CPU?")
-- environment.mixed_precision_training is on by default: fp16 GEMMs and loss scaling.
check(gpu_text:find("mixed precision: fp16 GEMM operands", 1, true), "mixed precision on the device:\n" .. gpu_text)
-- Training batches went ahead on the copy stream, through a few reused pinned buffers.
local staged, copied = gpu_text:match("cuda memory: %d+ cudaMalloc calls, (%d+) pinned staging buffers %([%d.]+ MiB%), (%d+) batch tensors copied ahead")
check(staged, "no copy-stream line in the device run:\n" .. gpu_text)
check(tonumber(copied) > 0 and tonumber(staged) >= 1 and tonumber(staged) <= 4,
            ("copy stream: %s pinned staging buffers for %s copies"):format(staged, copied))

local g, c = log_row(gpu_dir), log_row(cpu_dir)
check(math.abs(g.train_loss - c.train_loss) < 1e-2 * (1 + math.abs(c.train_loss)),
            ("train loss: cuda %g, cpu %g"):format(g.train_loss, c.train_loss))
local gp, cp = probabilities(gpu_dir), probabilities(cpu_dir)
local n, worst = 0, 0
for file, p in pairs(cp) do
    check(gp[file], "device run has no prediction for " .. file)
    local q = gp[file]
    for k = 1, #p do worst = math.max(worst, math.abs(p[k] - q[k])) end
    n = n + 1
end
check(n >= 2, "validation predictions: " .. n)
check(worst < 2e-2, ("validation probabilities differ by %g between cuda and cpu"):format(worst))

-- The device run's checkpoint on the CPU: weights, optimizer state, a step.
local cfg = sys.json_decode(read(gpu_dir .. "/config.json"), "config.json")
local model = pipeline.build_model(cfg.architecture, 4)
local opt = train.optimizer(cfg, model, 2)
local classes = sys.json_decode(read(gpu_dir .. "/metrics.json"), "metrics.json").classes
local state = train.load_checkpoint(gpu_dir, model, opt, { cfg = cfg, classes = classes })
check(state.epoch == 1, "run state from the device checkpoint")
check(model.flat_params:device() == "cpu", "model on the cpu")
model:training()
local x = mt.randn{2, 1, 128, 40}
local out = model:forward(x)
model:backward(x, out:clone():fill(0.1))
opt:step()
for _, e in ipairs(model:parameters()) do
    check(e.param:device() == "cpu", "parameter " .. e.name .. " on the cpu")
end
check(model.flat_params:sum() == model.flat_params:sum(), "finite parameters after a CPU step")

os.execute("rm -rf '" .. tmp .. "'")
print(("experiment on device: ok (%d validation clips, largest probability difference %.2g)"):format(n, worst))
