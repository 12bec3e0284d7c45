-- nn.compile_inference(model, {precision = "fp32" | "bf16", winograd = true}): a ResNet
-- (nn.resnet18/34, or any Sequential of the same layers) as one oneDNN
-- inference plan on the CPU. Each batch norm is folded into its
-- convolution, each convolution runs with its ReLU and residual sum as one
-- primitive, and activations stay in oneDNN's layout and in the plan's
-- precision from the first convolution to the global pooling; the pooling
-- head (GeM or average), dropout (inactive) and the linear layer run as
-- the model's own modules. plan:forward(x) gives the logits of
-- model:evaluate(); model:forward(x), with running batch-norm statistics.
--
-- The plan copies the weights when it is built; after training changes
-- them, plan:refresh() takes them again. A model with any other layer is
-- refused with an error naming it.
--
-- Precision: opts.precision, else mt.gemm_precision(); bf16 needs
-- avx512_bf16 or AMX, and falls back to fp32 with a message without them.
-- fp32 plans run 3x3 stride-1 convolutions as Winograd F(4x4, 3x3) (a
-- quarter of the multiplications; rounding within 1e-6 of direct here)
-- unless winograd = false; bf16 plans are always direct (AMX).
local mt = require "machrt"
local K = require "machrt.kernels"
local Module = require "machrt.nn.module"

local Plan = {}
Plan.__index = Plan

local function refuse(m, why)
    error(("compile_inference: %s %s"):format(m:where(), why), 4)
end

local function is(m, name) return m.__name == name end

local function is_batchnorm(m) return is(m, "BatchNorm2d") or is(m, "SyncBatchNorm2d") end

local function check_device(m)
    for _, name in ipairs(m.param_order) do
        if m.params[name].param:device() ~= "cpu" then
            refuse(m, "is on " .. m.params[name].param:device() .. "; an inference plan runs on the CPU")
        end
    end
end

-- The builder walks the modules in order and appends plan operations;
-- convs lists each convolution with its batch norm, for refresh.
local Builder = {}
Builder.__index = Builder

function Builder:conv(conv, bn, src, residual, relu)
    if not is(conv, "Conv2d") then refuse(conv, "is not a Conv2d where the plan expects one") end
    check_device(conv)
    if bn and not is_batchnorm(bn) then refuse(bn, "is not a BatchNorm2d where the plan expects one") end
    if bn and bn.c ~= conv.cout then refuse(bn, ("has %d channels after a %d-channel convolution"):format(bn.c, conv.cout)) end
    local v = self.plan:conv(conv:where(), src, residual,
        {conv.cin, conv.cout, conv.kh, conv.kw, conv.sh, conv.sw, conv.ph, conv.pw}, relu)
    self.convs[#self.convs + 1] = {value = v, conv = conv, bn = bn}
    return v
end

function Builder:block(b, x)
    local c = b.children
    for _, name in ipairs(b.child_order) do
        local ok = ({conv1 = 1, bn1 = 1, relu = 1, conv2 = 1, bn2 = 1, downsample = 1})[name]
        if not ok then refuse(c[name], "is not part of a BasicBlock the plan knows") end
    end
    if not is(c.relu, "ReLU") or not is(b.out_relu, "ReLU") then refuse(b, "has no ReLU where the plan expects one") end
    local h = self:conv(c.conv1, c.bn1, x, nil, true)
    local shortcut = x
    if c.downsample then
        local d = c.downsample
        if not is(d, "Sequential") or #d.child_order ~= 2 then refuse(d, "is not a Sequential of a Conv2d and a BatchNorm2d") end
        shortcut = self:conv(d.children[d.child_order[1]], d.children[d.child_order[2]], x, nil, false)
    end
    return self:conv(c.conv2, c.bn2, h, shortcut, true)
end

-- Appends the body of Sequential `seq`; returns the last value and, once
-- the global pooling is reached, the head modules from there on.
function Builder:sequence(seq, x, head)
    local order = seq.child_order
    local i = 1
    while i <= #order do
        local m = seq.children[order[i]]
        local nxt = seq.children[order[i + 1]]
        if head then
            if is(m, "Dropout") or is(m, "Flatten") or is(m, "Linear") then
                if is(m, "Linear") then check_device(m) end
                if not is(m, "Dropout") then head[#head + 1] = m end
            else
                refuse(m, "follows the global pooling; the plan takes only Flatten, Dropout and Linear there")
            end
            i = i + 1
        elseif is(m, "Conv2d") then
            local bn = nxt and is_batchnorm(nxt) and nxt or nil
            local after = seq.children[order[i + (bn and 2 or 1)]]
            local relu = after and is(after, "ReLU")
            x = self:conv(m, bn, x, nil, relu)
            i = i + 1 + (bn and 1 or 0) + (relu and 1 or 0)
        elseif is(m, "MaxPool2d") then
            x = self.plan:maxpool(m:where(), x, m.kh, m.kw, m.sh, m.sw, m.ph, m.pw)
            i = i + 1
        elseif is(m, "BasicBlock") then
            x = self:block(m, x)
            i = i + 1
        elseif is(m, "Sequential") then
            x, head = self:sequence(m, x, head)
            i = i + 1
        elseif is(m, "GeM") or is(m, "AdaptiveAvgPool2d") then
            check_device(m)
            head = {m}
            i = i + 1
        elseif is(m, "Dropout") then
            i = i + 1 -- inactive in evaluation
        else
            refuse(m, "cannot be planned (the plan takes Conv2d, BatchNorm2d, ReLU, MaxPool2d, BasicBlock, GeM or AdaptiveAvgPool2d, Flatten, Dropout, Linear)")
        end
    end
    return x, head
end

local said_fallback = false

local function choose_precision(opts)
    local want = opts.precision or mt.gemm_precision()
    if want ~= "fp32" and want ~= "bf16" then
        error(("compile_inference: precision must be 'fp32' or 'bf16', got '%s'"):format(tostring(want)), 3)
    end
    if want == "bf16" and not K.infer_bf16_supported() then
        if not said_fallback then
            io.stderr:write("machrt: bf16 inference plan unavailable (this CPU has neither avx512_bf16 nor AMX); using fp32\n")
            said_fallback = true
        end
        return "fp32"
    end
    return want
end

local function compile(model, opts)
    opts = opts or {}
    if type(model) ~= "table" or not model.child_order then
        error("compile_inference: expected a model (an nn module)", 3)
    end
    for k in pairs(opts) do
        if k ~= "precision" and k ~= "winograd" then
            error(("compile_inference: unknown option '%s' (valid: precision, winograd)"):format(tostring(k)), 3)
        end
    end
    local first = model
    while first and not is(first, "Conv2d") do first = first.children[first.child_order[1]] end
    if not first then error(("compile_inference: %s does not start with a Conv2d"):format(model:where()), 3) end
    local precision = choose_precision(opts)
    local b = setmetatable({plan = K.infer_plan(precision, first.cin), convs = {}}, Builder)
    if opts.winograd == false then b.plan:set_winograd(false) end
    local body, head = b:sequence(model, 0, nil)
    if not head then
        error(("compile_inference: %s has no global pooling (GeM or AdaptiveAvgPool2d)"):format(model:where()), 3)
    end
    if body == 0 then error(("compile_inference: %s has no convolution"):format(model:where()), 3) end
    local self = setmetatable({plan = b.plan, convs = b.convs, head = head, precision = precision,
                               in_channels = first.cin, model = model}, Plan)
    self:refresh()
    return self
end

--- Takes the model's current weights and batch-norm statistics again.
function Plan:refresh()
    for _, e in ipairs(self.convs) do
        local w, bias = e.conv.params.weight.param, e.conv.params.bias
        local bn = e.bn
        if bn then
            self.plan:set_weights(e.value, w, bias and bias.param, bn.params.weight.param, bn.params.bias.param,
                bn.buffers.running_mean, bn.buffers.running_var, bn.eps)
        else
            self.plan:set_weights(e.value, w, bias and bias.param)
        end
    end
    return self
end

--- The logits (or whatever the head gives) for x: N x C x H x W on the CPU.
function Plan:forward(x)
    if not mt.is_tensor(x) or x:dim() ~= 4 or x:size(2) ~= self.in_channels then
        error(("inference plan: expected input of shape N x %d x H x W, got %s"):format(self.in_channels,
            mt.is_tensor(x) and Module.shape_str(x) or type(x)), 2)
    end
    if x:device() ~= "cpu" then error("inference plan: the input is on " .. x:device() .. "; the plan runs on the CPU", 2) end
    -- the body's output is kept for the next input of the same shape
    local shape = Module.shape_str(x)
    if shape ~= self.body_shape then self.body_out, self.body_shape = nil, shape end
    local ok, y = pcall(self.plan.forward, self.plan, x:contiguous(), self.body_out)
    if not ok then
        self.body_shape = nil
        error(tostring(y), 2)
    end
    self.body_out = y
    for _, m in ipairs(self.head) do y = m:forward(y) end
    -- the head's modules are the model's: its next forward reuses their outputs
    return y:clone()
end

--- Frees everything the plan holds in C (weights, primitives, buffers);
--- the plan cannot run afterwards.
function Plan:release()
    self.plan:release()
    self.body_out, self.body_shape = nil, nil
end

--- How many activation reorders run between the input's and the output's
--- for an n x h x w input, and the oneDNN implementation of every step.
function Plan:describe(n, h, w) return self.plan:describe(n, h, w) end

return {compile_inference = compile}
