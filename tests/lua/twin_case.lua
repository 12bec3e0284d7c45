-- The committed twin case (loaded with `require "twin_case"`): a tiny traced
-- run of experiments/resnet34.lua whose every step the PyTorch twin
-- (tests/fixtures/trajectory_twin.py, teacher-forced) has computed once, in
-- tests/fixtures/twin_tiny.json. Shared by the generator
-- (tests/fixtures/gen_twin_fixture.lua) and the test (test_twin.lua), so
-- both run the same command and digest the same things.
--
--   local C = require "twin_case"
--   local code, text = C.run(C.corpus(dir), out, trace)     -- MACHRT_TRACE=trace
--   local inputs = C.inputs(trace)     -- {digest = sha256, fingerprint = {name = number}}
--   local steps = C.steps(trace)       -- {{step =, loss =, grad_norm =, lr =}, ...}

local mt = require "machrt"
local sys = require "machrt.sys"
local csv = require "machrt.data.csv"

local M = {}

M.FIXTURE = "tests/fixtures/twin_tiny.json"
M.REGENERATE = "PYTHON=peers/bin/python ./machrt tests/fixtures/gen_twin_fixture.lua"

--- 10 synthetic clips (8 training, 2 validation), in `path` (generated
--- when it has none yet).
function M.corpus(path)
    if not sys.stat(path .. "/dataset.csv") then
        require("machrt.synth").generate(path, { clips = 10, seed = 5 })
    end
    return path
end

--- The run: width 4, 2 epochs of 2 steps (batches of 4 crops of 2 s),
--- evaluated on 5 s Fix chunks after each epoch; fp32 GEMMs and 2 threads,
--- as the twin computes.
function M.args(data, out)
    return table.concat({
        "--dataset.data_folder=" .. data, "--dataset.train_dataframe=" .. data .. "/dataset.csv",
        "--architecture.width=4", "--training.batch_size=4", "--training.epochs=2",
        "--environment.number_of_workers=1", "--environment.seed=11", "--environment.threads=2",
        "--environment.mixed_precision_training=false",
        "--audio.training_chunk_seconds=2", "--prediction.inference_chunk_seconds=5",
        "--training.run_interpretations=false", "--training.build_scoring_pipelines=false",
        "--output_directory=" .. out,
    }, " ")
end

--- Runs the traced experiment (with every step's state when `states`, for
--- a teacher-forced twin); returns the exit status and the output.
function M.run(data, out, trace, states)
    local env = string.format("MACHRT_TRACE='%s'%s", trace, states and " MACHRT_TRACE_STATES=1" or "")
    local cmd = string.format("%s ./machrt experiments/resnet34.lua %s 2>&1", env, M.args(data, out))
    local p = assert(io.popen(cmd))
    local text = p:read("a")
    local _, _, code = p:close()
    return code, text
end

-- The traced files the twin reads, in order: the initial weights, the
-- training batches, the validation inputs.
local function input_files(trace)
    local names = { "initial.safetensors" }
    for _, pattern in ipairs({ "batch_%06d.safetensors", "val_%06d.safetensors" }) do
        local i = 1
        while sys.stat(trace .. "/" .. string.format(pattern, i)) do
            names[#names + 1] = string.format(pattern, i)
            i = i + 1
        end
    end
    return names
end

-- The settings the twin follows, as one canonical text (sys.json_encode
-- sorts keys); the GEMM precision included.
local function settings_text(trace)
    local f = assert(io.open(trace .. "/trace.json", "rb"))
    local info = sys.json_decode(f:read("a"), trace .. "/trace.json")
    f:close()
    return sys.json_encode(info)
end

--- What the twin was given, in two parts. `digest`: SHA-256 over what must
--- be identical, the settings, every tensor's name and shape, the targets
--- and the chunk counts. `fingerprint`: per float tensor (the log-mel
--- inputs, each weight), the sums of |v| and v^2, which may differ in their
--- last bits on another CPU and are compared with a tolerance.
function M.inputs(trace)
    local exact, shapes, fingerprint = {}, {}, {}
    for _, file in ipairs(input_files(trace)) do
        local tensors = mt.load(trace .. "/" .. file)
        local names = {}
        for name in pairs(tensors) do names[#names + 1] = name end
        table.sort(names)
        for _, name in ipairs(names) do
            local t, key = tensors[name], file .. ":" .. name
            shapes[#shapes + 1] = key .. ":" .. table.concat(t:shape(), "x")
            if name == "target" or name == "counts" or t:dtype() ~= "float32" then
                exact[key] = t
            elseif t:numel() > 0 then
                fingerprint[key .. " sum|v|"], fingerprint[key .. " sum v^2"] = t:abs():sum(), (t * t):sum()
            end
        end
    end
    local digest = mt.checksum(exact, { settings = settings_text(trace), shapes = table.concat(shapes, ";") })
    return { digest = digest, fingerprint = fingerprint }
end

--- machrt's steps from trace.csv.
function M.steps(trace)
    local df = csv.read(trace .. "/trace.csv")
    local out = {}
    for i = 1, df:nrows() do
        out[i] = { step = tonumber(df:column("step")[i]), loss = tonumber(df:column("loss")[i]),
                   grad_norm = tonumber(df:column("grad_norm")[i]), lr = tonumber(df:column("lr")[i]) }
    end
    return out
end

--- The clip probabilities of evaluation n ({clips, classes}) as rows of numbers.
function M.probs(dir, n)
    return mt.load(string.format("%s/val_probs_%03d.safetensors", dir, n)).probs:totable()
end

return M
