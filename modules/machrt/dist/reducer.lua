-- dist.GradReducer(model, {bucket_mb = 25, op = "mean"}): averages a
-- model's gradients over the ranks in buckets (PyTorch DDP's default size),
-- each reduced by one non-blocking allreduce as soon as its gradients are
-- complete, so communication overlaps the rest of the backward pass.
--
--   local reducer = dist.GradReducer(model)   -- model:flatten_parameters() first
--   ... backward; after parameter i's gradient is final: reducer:ready(i)
--   reducer:wait()                             -- before clipping and the step
--   reducer:attach(model)   -- or: each module reports its parameters itself
--   reducer:detach()        -- backward no longer reports (after training)
--
-- Buckets are cut in backward order (the last parameters' gradients are
-- ready first), from the parameter sizes alone: the same buckets on every
-- rank and in every run, which keeps the reduction order, and the bits of
-- the result, the same from run to run.
local C = require "machrt.dist_c"

local GradReducer = {}
GradReducer.__index = GradReducer

local function fail(fmt, ...) error("GradReducer: " .. fmt:format(...), 3) end

-- Parameter i (1-based, model:parameters() order) covers flat elements
-- offsets[i] .. offsets[i] + sizes[i] - 1. Returns the buckets in
-- increasing order: {first = element, params = {i, ...}}.
local function cut_buckets(sizes, bucket_elems)
    local offsets, at = {}, 1
    for i, n in ipairs(sizes) do offsets[i], at = at, at + n end
    local reversed, current, filled = {}, nil, 0
    for i = #sizes, 1, -1 do
        if not current then current, filled = { params = {} }, 0 end
        current.params[#current.params + 1] = i
        current.first = offsets[i]
        filled = filled + sizes[i]
        if filled >= bucket_elems then reversed[#reversed + 1], current = current, nil end
    end
    if current then reversed[#reversed + 1] = current end
    local buckets = {}
    for k = #reversed, 1, -1 do buckets[#buckets + 1] = reversed[k] end
    return buckets
end

function GradReducer.new(model, opts)
    opts = opts or {}
    if type(model) ~= "table" or not model.parameters then fail("expected a model (an nn.Module)") end
    local flat = model.flat_grads
    if not flat then fail("the model's gradients are not one flat buffer: call model:flatten_parameters() first") end
    local mb = opts.bucket_mb or 25
    if type(mb) ~= "number" or not (mb > 0) then fail("bucket_mb must be a positive number, got %s", tostring(mb)) end
    local op = opts.op or "mean"
    if op ~= "mean" and op ~= "sum" then fail("op must be mean or sum, got %s", tostring(op)) end
    local params, sizes = model:parameters(), {}
    for i, p in ipairs(params) do sizes[i] = p.grad:numel() end
    local self = setmetatable({ flat = flat, op = op, device = flat:device(), params = params }, GradReducer)
    self.buckets = cut_buckets(sizes, math.max(1, math.floor(mb * 1024 * 1024 / 4)))
    self.bucket_of, self.pending, self.done = {}, {}, {}
    local starts = {}
    for b, bucket in ipairs(self.buckets) do
        starts[b] = bucket.first
        for _, i in ipairs(bucket.params) do self.bucket_of[i] = b end
        self.pending[b] = #bucket.params
    end
    -- A device buffer has no overlap yet: wait() reduces it in one piece,
    -- by NCCL on the GPUs in a CUDA build (dist.transport), else through
    -- host memory.
    if self.device == "cpu" then self.handle = C.reducer(flat, starts, op) end
    return self
end

--- Parameter i's gradient is final for this step: starts its bucket's
--- allreduce once every parameter in the bucket is.
function GradReducer:ready(i)
    local b = self.bucket_of[i]
    if not b then fail("parameter %s is not one of the model's %d", tostring(i), #self.params) end
    if self.done[i] then fail("parameter %d (%s) reported ready twice in one step", i, self.params[i].name) end
    self.done[i] = true
    self.pending[b] = self.pending[b] - 1
    if self.pending[b] == 0 and self.handle then self.handle:start(b) end
end

--- Buckets whose allreduce has started in this step.
function GradReducer:started()
    local n = 0
    for _, left in ipairs(self.pending) do if left == 0 then n = n + 1 end end
    return n
end

--- Starts what has not started, waits for every bucket: the gradients are
--- then the same on every rank (their mean, or sum). Resets for the next step.
function GradReducer:wait()
    if self.handle then
        self.handle:wait()
    else
        require("machrt.dist").allreduce(self.flat, self.op)
    end
    for b, bucket in ipairs(self.buckets) do self.pending[b] = #bucket.params end
    self.done = {}
end

--- Makes every module of `model` that owns parameters report them ready
--- as its backward returns (their gradients are final then, unless a
--- parameter is used twice in one step), so buckets start during backward
--- with no change to the training step. Returns self.
function GradReducer:attach(model)
    local index = {}
    for i, p in ipairs(self.params) do index[p.grad] = i end
    self.attached = self.attached or {}
    model:apply(function(m)
        if #m.param_order == 0 then return end
        local own = {}
        for _, n in ipairs(m.param_order) do
            own[#own + 1] = index[m.params[n].grad] or fail("%s.%s is not one of this reducer's parameters", m.path, n)
        end
        local backward = m.backward
        self.attached[#self.attached + 1] = { m, rawget(m, "backward") }
        m.backward = function(module, ...)
            local g = backward(module, ...)
            for _, i in ipairs(own) do self:ready(i) end
            return g
        end
    end)
    return self
end

--- Undoes attach: the modules' backward no longer reports to the reducer.
function GradReducer:detach()
    for _, saved in ipairs(self.attached or {}) do rawset(saved[1], "backward", saved[2]) end
    self.attached = {}
    return self
end

function GradReducer:release()
    if self.handle then self.handle:release() end
    self.handle = nil
end

GradReducer.cut_buckets = cut_buckets

return setmetatable(GradReducer, { __call = function(_, ...) return GradReducer.new(...) end })
