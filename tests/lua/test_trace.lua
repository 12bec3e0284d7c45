-- MACHRT_TRACE=DIR (machrt.trace): a traced run of experiments/resnet34.lua
-- (a child process, the tiny experiment) leaves what a twin needs to follow
-- it, and what it leaves is what the model saw: the initial weights and a
-- batch give the step's recorded loss, and the state after the last step is
-- the checkpoint's.

local A = require "assert"
local mt = require "machrt"
local nn = require "machrt.nn"
local csv = require "machrt.data.csv"
local pipeline = require "machrt.pipeline"

local F = require "files"
local X = require "tiny_experiment"
local tests, test, make_tmpdir = F.suite()

local corpus
local function tiny_corpus()
    corpus = corpus or X.corpus(make_tmpdir{ create = false, keep = true })
    return corpus
end

-- fp32 GEMMs: the test recomputes the recorded losses in fp32 (with the
-- reference's mixed_precision_training a CPU with bf16 would train in bf16).
local ARGS = " --training.epochs=1 --training.run_interpretations=false --training.build_scoring_pipelines=false"
    .. " --environment.mixed_precision_training=false"

local function traced_run(out, trace, extra_env)
    return X.run(X.args(tiny_corpus(), out) .. ARGS,
                 string.format("MACHRT_TRACE=%s %s", trace, extra_env or ""))
end

-- The tiny experiment's network, weights from a traced state.
local function model_of(state)
    local model = pipeline.build_model({ backbone = "resnet34", pool = "GeM", dropout = 0, width = 4 },
                                       state["fc.bias"]:size(1), { init = false })
    local weights = {}
    for k, v in pairs(state) do
        if not k:find("^state%.") then weights[k] = v end
    end
    model:load_state_dict(weights)
    model:training()
    return model
end

local function loss_on(model, batch)
    return nn.BCEWithLogitsLoss():forward(model:forward(batch.x), batch.target)
end

test("a traced run records the initial weights, every batch and every step", function()
    local out, trace = make_tmpdir{ create = false }, make_tmpdir{ create = false }
    local code, text = traced_run(out, trace, "MACHRT_TRACE_STATES=1")
    A.eq(code, 0, "exit status; output:\n" .. text)
    local steps = csv.read(trace .. "/trace.csv")
    A.eq(steps:nrows(), 4, "4 batches of 8 from 32 training clips, one step each")
    A.eq(table.concat(steps:column("step"), ","), "1,2,3,4")
    A.eq(table.concat(steps:column("last_batch"), ","), "1,2,3,4")
    A.near(tonumber(steps:column("lr")[1]), 0.001, 1e-12, "the first step's rate")
    local norm = tonumber(steps:column("grad_norm")[1])
    A.truthy(norm > 0 and norm < math.huge, "a finite gradient norm, got " .. tostring(norm))
    -- The weights before step 1 and batch 1 give step 1's loss; machrt's
    -- state after step 1 and batch 2 give step 2's.
    local mt1 = mt.load(trace .. "/batch_000001.safetensors")
    A.shape_eq(mt1.x, { 8, 1, 128, 173 }, "batch 1: the log-mel of 8 crops of 4 s")
    local initial = mt.load(trace .. "/initial.safetensors")
    A.near(loss_on(model_of(initial), mt1), tonumber(steps:column("loss")[1]), 1e-6, "step 1 loss")
    local after1 = mt.load(trace .. "/state_000001.safetensors")
    A.truthy(after1["state.fc.weight.exp_avg"], "the optimizer's moments are in the state")
    A.near(loss_on(model_of(after1), mt.load(trace .. "/batch_000002.safetensors")),
           tonumber(steps:column("loss")[2]), 1e-6, "step 2 loss")
    -- After the last step: the checkpoint's weights and buffers, exactly.
    local last, checkpoint = mt.load(trace .. "/state_000004.safetensors"),
        mt.load(X.fold_dir(out) .. "/checkpoint.safetensors")
    for name, v in pairs(initial) do
        A.eq((last[name]:float() - checkpoint[name]:float()):abs():max(), 0, name .. " against the checkpoint")
    end
    local val = csv.read(trace .. "/val.csv")
    A.eq(val:nrows(), 1, "one evaluation")
    A.eq(val:column("step")[1], "4", "after step 4")
    A.truthy(F.exists(trace .. "/val_000001.safetensors") and F.exists(trace .. "/val_probs_001.safetensors"),
             "the evaluation's inputs and probabilities")
    A.eq(F.exists(trace .. "/state_000005.safetensors"), false)
end)

test("a folder that already holds a trace is refused, naming it", function()
    local trace = make_tmpdir{ create = false }
    local code, text = traced_run(make_tmpdir{ create = false }, trace)
    A.eq(code, 0, "exit status; output:\n" .. text)
    A.eq(F.exists(trace .. "/state_000001.safetensors"), false, "states only with MACHRT_TRACE_STATES=1")
    code, text = traced_run(make_tmpdir{ create = false }, trace)
    A.truthy(code ~= 0, "a second run into the trace folder must fail")
    A.truthy(text:find("already holds a trace", 1, true) and text:find(trace, 1, true),
             "the message names the folder; output:\n" .. text)
end)

test("audio.resampler reaches the model's input: torchaudio's sinc changes only the top of the band", function()
    local x = {}
    for _, rs in ipairs({ "soxr", "torchaudio" }) do
        local trace = make_tmpdir{ create = false }
        local code, text = X.run(X.args(tiny_corpus(), make_tmpdir{ create = false }) .. ARGS
                                 .. " --audio.resampler=" .. rs, "MACHRT_TRACE=" .. trace)
        A.eq(code, 0, "exit status; output:\n" .. text)
        x[rs] = mt.load(trace .. "/batch_000001.safetensors").x -- {8, 1, 128 mels, T}
    end
    -- The same crops: the mel bins below 4 kHz (1-76) agree, the 13 from the
    -- source's 8 kHz Nyquist frequency to 11025 Hz (102-114) do not (README,
    -- bench/resampler_mel.lua); the bins above 11025 Hz are empty in both.
    local d = (x.soxr - x.torchaudio):abs()
    local low, high = d:narrow(3, 1, 76):mean(), d:narrow(3, 102, 13):mean()
    A.truthy(low < 0.05, string.format("bins 1-76: mean |difference| %.3g dB", low))
    A.truthy(high > 10, string.format("bins 102-114: mean |difference| %.3g dB", high))
end)

return tests
