-- The training step of an experiment: forward, loss, NaN check, backward,
-- gradient accumulation, loss-scaling skip, clipping, learning-rate update,
-- optimizer step and the test kill point, in the reference recipe's order.
-- Experiments get it as train.Stepper:
--
--   local stepper = train.Stepper{ model = model, loss = loss_fn, optimizer = opt, set_lr = set_lr,
--                                  scaler = scaler, cfg = cfg, state = state, checkpoint_dir = dir }
--   for epoch = state.epoch + 1, cfg.training.epochs do
--       stepper:start_epoch(epoch)
--       for b, batch in loader:epoch(epoch) do
--           stepper:step(front(batch.wave), batch.target, b)
--       end
--       -- stepper:mean_loss(), stepper.seen (samples), stepper.lr, state.step
--   end
--
-- Where one step ends: batch b closes an accumulation of
-- training.grad_accumulation batches when b % grad_accumulation == 0 (the
-- batch number within the epoch, so a batch that had no clip still counts
-- and a partial accumulation at the end of an epoch is dropped by the next
-- start_epoch). Then, in this order:
--   1. reduce_gradients(model, stepper), when given: the accumulated
--      gradients are complete here and nothing has read them yet. Data-
--      parallel training averages them across ranks in this hook (one
--      allreduce of model.flat_grads), so every rank then takes the same
--      Inf/NaN skip decision, clips the same norm and makes the same update.
--   2. with a loss scaler: unscale; an Inf/NaN gradient skips the update.
--   3. training.gradient_clip > 0: clip the global norm.
--   4. the learning rate of the step (set_lr(step)), the optimizer step.
--   5. scaler update (its state into state.amp, saved with the checkpoint),
--      zero_grad, and the kill point of the kill-and-resume tests.
--
-- MACHRT_TRACE=DIR records the run for a twin to follow (machrt.trace):
-- the initial weights, every batch's input and per step the loss, the
-- gradient norm before clipping and the learning rate.

local mt = require "machrt"
local optim = require "machrt.optim"
local log = require "machrt.log"
local trace = require "machrt.trace"

local M = {}

local Stepper = {}
Stepper.__index = Stepper

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end

local function is_finite(v) return v == v and v ~= math.huge and v ~= -math.huge end

--- A stop from outside, for tests of kill-and-resume: MACHRT_KILL_AT_STEP=n
--- sends SIGKILL to this process right after optimizer step n; under mpirun
--- MACHRT_KILL_RANK=r limits it to rank r (a rank dying mid-epoch).
local KILL_AT_STEP = tonumber(os.getenv("MACHRT_KILL_AT_STEP") or "")
local KILL_RANK = tonumber(os.getenv("MACHRT_KILL_RANK") or "")

local function kill_point(step)
    if step == KILL_AT_STEP and (not KILL_RANK or KILL_RANK == require("machrt.dist").rank()) then
        io.stdout:flush()
        os.execute("kill -KILL " .. require("machrt.sys").pid())
    end
end

-- Unscales the model's gradients; false when one is Inf/NaN (skip the step).
local function unscale(scaler, model)
    return scaler:unscale(model.flat_grads and { { grad = model.flat_grads } } or model:parameters())
end

--- o: model, loss (a criterion: forward(logits, target) -> number,
--- backward(logits, target) -> gradient), optimizer, set_lr(step) -> lr,
--- cfg (reads training.grad_accumulation and training.gradient_clip),
--- state (the run state: state.step counts optimizer steps, state.amp keeps
--- the scaler's state); optional: scaler (machrt.amp; nil = fp32),
--- checkpoint_dir (named when a NaN loss stops the run), reduce_gradients
--- (see the header), profile (machrt.profile: the step's time goes to its
--- "forward + backward" and "optimizer" parts).
function M.new(o)
    if type(o) ~= "table" then fail("train.Stepper: expected a table of options, got %s", type(o)) end
    for _, key in ipairs{ "model", "loss", "optimizer", "cfg", "state" } do
        if type(o[key]) ~= "table" then fail("train.Stepper: %s is required (a table), got %s", key, type(o[key])) end
    end
    for _, key in ipairs{ "set_lr", "reduce_gradients" } do
        if o[key] ~= nil and type(o[key]) ~= "function" then
            fail("train.Stepper: %s must be a function, got %s", key, type(o[key]))
        end
    end
    if not o.set_lr then fail("train.Stepper: set_lr (step -> learning rate) is required") end
    if o.profile ~= nil and getmetatable(o.profile) ~= require("machrt.profile").Profile then
        fail("train.Stepper: profile must be a machrt.profile (profile.new()), got %s", type(o.profile))
    end
    local tr = o.cfg.training or fail("train.Stepper: cfg has no training section")
    local accumulation = math.tointeger(tr.grad_accumulation)
    if not accumulation or accumulation < 1 then
        fail("training.grad_accumulation must be a positive integer, got %s", tostring(tr.grad_accumulation))
    end
    if type(tr.gradient_clip) ~= "number" then
        fail("training.gradient_clip must be a number (0 = no clipping), got %s", tostring(tr.gradient_clip))
    end
    if math.type(o.state.step) ~= "integer" then
        fail("train.Stepper: state.step must be an integer (optimizer steps so far), got %s", tostring(o.state.step))
    end
    return setmetatable({
        model = o.model, loss = o.loss, optimizer = o.optimizer, set_lr = o.set_lr, scaler = o.scaler,
        state = o.state, checkpoint_dir = o.checkpoint_dir, reduce_gradients = o.reduce_gradients,
        accumulation = accumulation, clip = tr.gradient_clip,
        epoch = o.state.epoch or 0, loss_sum = 0, seen = 0, lr = o.optimizer.param_groups[1].lr,
        trace = trace.start(o.model, o.optimizer, o.cfg, o.state), profile = o.profile,
    }, Stepper)
end

--- Starts an epoch: training mode, no gradient carried over from a partial
--- accumulation, the epoch's loss mean restarted.
function Stepper:start_epoch(epoch)
    self.epoch = epoch
    self.loss_sum, self.seen = 0, 0
    self.lr = self.optimizer.param_groups[1].lr
    self.model:zero_grad()
    self.model:training()
    if self.trace then self.trace:start_epoch() end
end

--- One batch: x the model's input, target on the model's device, b the
--- batch number within the epoch (1-based); weight (default 1) scales the
--- gradient: a rank's share of an unevenly split batch times the rank count
--- (batch.weight of a sharded loader), so the average over ranks is the
--- mean over the batch. The gradient is divided by grad_accumulation (as
--- H2O's trainers divide the loss), so an accumulated step follows the mean
--- over its batches, as one batch of their size would, at the same learning
--- rate. Returns the batch's loss (undivided) and whether an optimizer step
--- ended with it.
function Stepper:step(x, target, b, weight)
    local model, loss_fn = self.model, self.loss
    local t0 = self.profile and mt.clock()
    if self.trace then self.trace:batch(x, target) end
    local logits = model:forward(x)
    local loss = loss_fn:forward(logits, target)
    if not is_finite(loss) then
        error(string.format("training loss is %s at epoch %d, step %d; stopping%s", tostring(loss),
            self.epoch, self.state.step + 1, self.checkpoint_dir
                and string.format(" (the last good checkpoint in %s is kept)", self.checkpoint_dir) or ""), 0)
    end
    local grad = loss_fn:backward(logits, target)
    local scale = (weight or 1) / self.accumulation
    if scale ~= 1 then grad = grad * scale end
    model:backward(x, self.scaler and self.scaler:scale(grad) or grad, true)
    local n = x:size(1)
    if self.trace then self.trace:loss(loss) end
    self.loss_sum, self.seen = self.loss_sum + loss * n, self.seen + n
    if t0 then self.profile:add("forward + backward", mt.clock() - t0) end
    if b % self.accumulation ~= 0 then return loss, false end
    if self.profile then
        self.profile:time("optimizer", self.update, self)
    else
        self:update()
    end
    return loss, true
end

--- The optimizer step over the accumulated gradients (see the header).
function Stepper:update()
    local model, scaler, state = self.model, self.scaler, self.state
    state.step = state.step + 1
    if self.reduce_gradients then self.reduce_gradients(model, self) end
    local finite = not scaler or unscale(scaler, model)
    -- clip_grad_norm returns the norm before clipping: the trace records that one.
    local norm = finite and self.clip > 0 and optim.clip_grad_norm(model:parameters(), self.clip) or nil
    if self.trace then self.trace:grad_norm(model, norm) end
    self.lr = self.set_lr(state.step)
    if finite then self.optimizer:step() end
    if self.trace then self.trace:step(state.step, self.epoch, self.lr) end
    if scaler then
        if not finite then
            log.info("step %d skipped: Inf/NaN gradient at loss scale %g", state.step, scaler:get_scale())
        end
        scaler:update()
        state.amp = scaler:state_dict()
    end
    model:zero_grad()
    kill_point(state.step)
end

--- The mean training loss per sample of the epoch so far (0 before any batch).
function Stepper:mean_loss() return self.loss_sum / math.max(self.seen, 1) end

return M
