-- machrt.trace: a training run's trajectory on disk, for a twin run in
-- another framework to follow step by step (tests/fixtures/trajectory_twin.py).
-- Opt-in: MACHRT_TRACE=DIR; unset, nothing here runs (train.Stepper and
-- train.evaluate test one upvalue).
--
--   DIR/trace.json                 the optimizer's groups (names, lr, betas, eps, weight_decay)
--                                  and the GEMM precision (a twin in fp32 follows an fp32 run)
--                                  and cfg.training
--   DIR/initial.safetensors        model:state_dict() before the first step (torchvision names)
--   DIR/batch_000001.safetensors   x (the model's input, the log-mel batch) and target, per batch
--   DIR/trace.csv                  per optimizer step: step, epoch, first_batch, last_batch,
--                                  loss (mean over the step's batches), grad_norm (global L2
--                                  norm before clipping), lr (the rate of that step)
--   DIR/val_000001.safetensors     the first evaluation's inputs: x (its Fix chunks' log-mel),
--                                  counts (chunks per clip), target; per validation batch
--   DIR/val.csv                    per evaluation: evaluation, step, loss, f1, accuracy
--   DIR/val_probs_001.safetensors  per evaluation: probs {clips, classes}
--   DIR/state_000001.safetensors   with MACHRT_TRACE_STATES=1, after every step: the model's
--                                  state_dict and the optimizer's state tensors
--                                  (state.<name>.exp_avg, ...), so a twin can start each step
--                                  from machrt's weights and compare one step at a time
--
-- One training per process, from its first step, on one rank: a resumed
-- run, a second training in the same process (another fold, another model)
-- and a data-parallel run are refused (the twin could not follow them), as
-- is a DIR that already holds a trace. The twin follows the classification
-- recipe of experiments/resnet34.lua.

local mt = require "machrt"
local sys = require "machrt.sys"
local csv = require "machrt.data.csv"
local optim = require "machrt.optim"

local M = {}

local DIR = os.getenv("MACHRT_TRACE")
if DIR == "" then DIR = nil end
local STATES = os.getenv("MACHRT_TRACE_STATES") == "1"

--- The trace being written (nil when MACHRT_TRACE is unset or before the run starts).
M.active = nil

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end

local Trace = {}
Trace.__index = Trace

local function append(path, header, row)
    local exists = sys.stat(path) ~= nil
    local f = assert(io.open(path, "ab"))
    if not exists then f:write(csv.row_text(header, #header), "\n") end
    f:write(csv.row_text(row, #header, { digits = 9 }), "\n")
    f:close()
end

local STEP_COLUMNS = { "step", "epoch", "first_batch", "last_batch", "loss", "grad_norm", "lr" }
local VAL_COLUMNS = { "evaluation", "step", "loss", "f1", "accuracy" }

--- Starts the trace of a run when MACHRT_TRACE is set (nil otherwise):
--- writes trace.json and initial.safetensors.
function M.start(model, optimizer, cfg, state)
    if not DIR then return nil end
    if M.active then
        fail("MACHRT_TRACE=%s traces one training per process, and this one starts a second (another "
             .. "fold, or another model of the experiment): give dataset.folds a single fold", DIR)
    end
    if state.step ~= 0 then
        fail("MACHRT_TRACE=%s traces a run from its first step: a resumed run (at step %d) cannot be traced",
             DIR, state.step)
    end
    if require("machrt.dist").size() > 1 then
        fail("MACHRT_TRACE=%s traces a single-process run, not a data-parallel one", DIR)
    end
    if sys.stat(DIR .. "/trace.csv") or sys.stat(DIR .. "/trace.json") then
        fail("MACHRT_TRACE=%s already holds a trace (trace.json): remove it or choose another folder", DIR)
    end
    sys.mkdir(DIR)
    local groups = {}
    for i, g in ipairs(optimizer.param_groups) do
        local names = {}
        for k, e in ipairs(g.params) do names[k] = e.name end
        groups[i] = { name = g.name, lr = g.initial_lr or g.lr, betas = g.betas, eps = g.eps,
                      weight_decay = g.weight_decay, amsgrad = g.amsgrad, momentum = g.momentum,
                      params = names }
    end
    sys.write_file(DIR .. "/trace.json", sys.json_encode({
        optimizer = optimizer.kind, gemm_precision = mt.gemm_precision(),
        groups = groups, training = cfg.training, audio = cfg.audio, prediction = cfg.prediction,
    }))
    local weights = {}
    for k, v in pairs(model:state_dict()) do weights[k] = v:to("cpu") end
    mt.save(DIR .. "/initial.safetensors", weights)
    local t = setmetatable({ dir = DIR, model = model, optimizer = optimizer, batches = 0, first_batch = 1, loss_sum = 0, loss_count = 0,
                             evaluations = 0, last_step = 0 }, Trace)
    M.active = t
    return t
end

--- One batch as the model sees it: its input and target, before the forward.
function Trace:batch(x, target)
    self.batches = self.batches + 1
    mt.save(string.format("%s/batch_%06d.safetensors", self.dir, self.batches),
            { x = x:to("cpu"):contiguous(), target = target:to("cpu"):contiguous() })
end

--- The loss of the batch just traced.
function Trace:loss(loss)
    self.loss_sum, self.loss_count = self.loss_sum + loss, self.loss_count + 1
end

--- The gradients' global norm before clipping: `norm` when the stepper has
--- clipped (clip_grad_norm returns it), else measured here.
function Trace:grad_norm(model, norm)
    self.norm = norm or optim.clip_grad_norm(model:parameters(), math.huge) -- math.huge: measures, never clips
end

--- An optimizer step ended: its row of trace.csv.
function Trace:step(step, epoch, lr)
    append(self.dir .. "/trace.csv", STEP_COLUMNS, {
        step, epoch, self.first_batch, self.batches, self.loss_sum / math.max(self.loss_count, 1),
        self.norm or 0 / 0, lr })
    if STATES then
        local tensors = {}
        for k, v in pairs(self.model:state_dict()) do tensors[k] = v:to("cpu") end
        for k, v in pairs((self.optimizer:state_dict())) do tensors[k] = v:to("cpu") end
        mt.save(string.format("%s/state_%06d.safetensors", self.dir, step), tensors)
    end
    self.last_step, self.first_batch, self.loss_sum, self.loss_count, self.norm = step, self.batches + 1, 0, 0, nil
end

--- A partial accumulation dropped at the start of an epoch: its batches belong to no step.
function Trace:start_epoch()
    self.first_batch, self.loss_sum, self.loss_count, self.norm = self.batches + 1, 0, 0, nil
end

--- One validation batch's input (first evaluation only): the log-mel of its
--- chunks, front(chunks), computed only when it is recorded.
function Trace:validation_batch(front, chunks, counts, target)
    if self.evaluations > 0 then return end
    local x = front(chunks)
    self.val_batches = (self.val_batches or 0) + 1
    local c = mt.tensor(counts)
    mt.save(string.format("%s/val_%06d.safetensors", self.dir, self.val_batches),
            { x = x:to("cpu"):contiguous(), counts = c, target = target:to("cpu"):contiguous() })
end

--- An evaluation ended: its metrics and probabilities.
function Trace:evaluation(m)
    self.evaluations = self.evaluations + 1
    append(self.dir .. "/val.csv", VAL_COLUMNS, { self.evaluations, self.last_step, m.loss, m.f1, m.accuracy })
    mt.save(string.format("%s/val_probs_%03d.safetensors", self.dir, self.evaluations),
            { probs = m.probs:contiguous() })
end

return M
