-- nn.Module: the base of every layer and container.
--
-- A module owns named parameters (each {param = tensor, grad = tensor}, the
-- gradient accumulating across backward calls), named buffers (running
-- statistics) and named children. Layers keep their outputs between calls
-- and write into them again when the shapes repeat (an output is overwritten
-- by the next forward: clone it to keep it). backward returns a new gradient
-- tensor; containers release each intermediate gradient as soon as it is
-- consumed, and each inner activation once no backward needs it any more
-- (as PyTorch frees saved tensors), so the peak memory of a step is that of
-- the activations plus the gradients in flight. The storage allocator hands
-- the released blocks to the next step. Hence: one backward per forward.
local mt = require "machrt"

local Module = {}
Module.__index = Module
Module.__name = "Module"

-- class(name, parent): a table of methods; calling it constructs an object.
local function class(name, parent)
    local c = {}
    c.__index = c
    c.__name = name
    -- Metamethods are looked up on the metatable itself, not through __index.
    c.__tostring = Module.__tostring
    c.__call = Module.__call
    setmetatable(c, {
        __index = parent,
        __call = function(cls, ...)
            local o = setmetatable({}, cls)
            Module._setup(o)
            o:__init(...)
            return o
        end,
    })
    return c
end
Module.class = class

function Module._setup(self)
    self.params, self.param_order = {}, {}
    self.buffers, self.buffer_order = {}, {}
    self.children, self.child_order = {}, {}
    self.train = true
    self.path = ""
end

function Module:__init() end

-- Where this module sits in its model, for error messages: "layer2.0.conv1".
function Module:where()
    return ("%s (%s)"):format(self.path ~= "" and self.path or "model", self.__name)
end

local function shape_str(t)
    local s = t:shape()
    return #s == 0 and "scalar" or table.concat(s, "x")
end
Module.shape_str = shape_str

-- Raises an error naming the module path (level 3: the caller of forward).
function Module:fail(fmt, ...)
    error(self:where() .. ": " .. fmt:format(...), 3)
end

-- Checks that x is a tensor of rank `rank` whose dimension `dim` is `size`.
function Module:check_input(x, rank, dim, size, layout)
    if not mt.is_tensor(x) then
        self:fail("expected a tensor input, got %s", type(x))
    end
    if x:dim() ~= rank or (dim and x:size(dim) ~= size) then
        self:fail("expected input of shape %s, got %s", layout, shape_str(x))
    end
end

-- Runs a kernel, prefixing any error with the module path.
function Module:kernel(fn, ...)
    local ok, a, b, c = pcall(fn, ...)
    if not ok then error(self:where() .. ": " .. tostring(a), 3) end
    return a, b, c
end

-- A buffer of the given shape on `like`'s device (the CPU without `like`):
-- `buf` itself when its shape and device already match.
function Module.reuse(buf, shape, like)
    local device = like and like:device() or "cpu"
    if buf and not buf:is_released() and buf:dim() == #shape and buf:device() == device then
        local same = true
        for i = 1, #shape do
            if buf:size(i) ~= shape[i] then same = false; break end
        end
        if same then return buf end
    end
    return like and like:new_empty(shape) or mt.empty(shape)
end

-- Set while building a model whose weights are loaded right after (see
-- Module.without_init): constructors then leave parameters uninitialised.
Module.skip_init = false

--- Runs build() with parameter initialisation off, and returns its result.
function Module.without_init(build)
    Module.skip_init = true
    local ok, result = pcall(build)
    Module.skip_init = false
    if not ok then error(result, 0) end
    return result
end

-- A parameter tensor initialised U(-bound, bound), PyTorch's default,
-- unless initialisation is off.
function Module.uniform_param(shape, bound)
    local t = mt.empty(shape)
    if not Module.skip_init then t:uniform_(-bound, bound) end
    return t
end

-- Releases a tensor's storage now (nil and released tensors are ignored).
function Module.free(t)
    if t and not t:is_released() then t:release() end
end

function Module:register_parameter(name, tensor)
    assert(not self.params[name], "parameter registered twice: " .. name)
    self.params[name] = {param = tensor, grad = tensor:new_zeros()}
    self.param_order[#self.param_order + 1] = name
end

function Module:register_buffer(name, tensor)
    self.buffers[name] = tensor
    self.buffer_order[#self.buffer_order + 1] = name
end

-- Adds a named child; re-derives the paths of its whole subtree.
function Module:add(name, child)
    name = tostring(name)
    if self.children[name] then error(("%s: duplicate child name '%s'"):format(self:where(), name), 2) end
    self.children[name] = child
    self.child_order[#self.child_order + 1] = name
    child:_set_path(self.path == "" and name or self.path .. "." .. name)
    return child
end

function Module:_set_path(path)
    self.path = path
    for _, name in ipairs(self.child_order) do
        self.children[name]:_set_path(path == "" and name or path .. "." .. name)
    end
end

-- Visits every module of the tree (pre-order) with its dotted name.
function Module:apply(fn, prefix)
    prefix = prefix or ""
    fn(self, prefix)
    for _, name in ipairs(self.child_order) do
        self.children[name]:apply(fn, prefix == "" and name or prefix .. "." .. name)
    end
end

local function join(prefix, name) return prefix == "" and name or prefix .. "." .. name end

-- {name =, param =, grad =} for every parameter, in registration order.
function Module:parameters()
    local list = {}
    self:apply(function(m, prefix)
        for _, n in ipairs(m.param_order) do
            local e = m.params[n]
            list[#list + 1] = {name = join(prefix, n), param = e.param, grad = e.grad}
        end
    end)
    return list
end

function Module:zero_grad()
    if self.flat_grads then
        self.flat_grads:fill(0)
        return
    end
    for _, p in ipairs(self:parameters()) do p.grad:fill(0) end
end

-- Parameters and buffers by their dotted names (torchvision's for ResNets).
function Module:state_dict()
    local sd = {}
    self:apply(function(m, prefix)
        for _, n in ipairs(m.param_order) do sd[join(prefix, n)] = m.params[n].param end
        for _, n in ipairs(m.buffer_order) do sd[join(prefix, n)] = m.buffers[n] end
    end)
    return sd
end

-- Copies tensors into the parameters and buffers of the same names.
-- strict (default): any missing or unexpected key, or a shape mismatch, is
-- an error listing them all; otherwise what fits is loaded and the lists are
-- returned.
function Module:load_state_dict(sd, opts)
    local strict = not (opts and opts.strict == false)
    local own = self:state_dict()
    local missing, unexpected, mismatched = {}, {}, {}
    for name, t in pairs(own) do
        local src = sd[name]
        if src == nil then
            missing[#missing + 1] = name
        elseif not mt.is_tensor(src) then
            mismatched[#mismatched + 1] = ("%s (not a tensor)"):format(name)
        elseif shape_str(src) ~= shape_str(t) then
            mismatched[#mismatched + 1] = ("%s (expected %s, got %s)"):format(name, shape_str(t), shape_str(src))
        end
    end
    for name in pairs(sd) do
        if own[name] == nil then unexpected[#unexpected + 1] = name end
    end
    table.sort(missing); table.sort(unexpected); table.sort(mismatched)
    local report = {missing = missing, unexpected = unexpected, mismatched = mismatched}
    if strict and (#missing > 0 or #unexpected > 0 or #mismatched > 0) then
        local parts = {}
        local function list(label, l)
            if #l > 0 then parts[#parts + 1] = ("%s: %s"):format(label, table.concat(l, ", ")) end
        end
        list("missing keys", missing)
        list("unexpected keys", unexpected)
        list("shape mismatches", mismatched)
        error("load_state_dict: " .. table.concat(parts, "; "), 2)
    end
    local bad = {}
    for _, n in ipairs(mismatched) do bad[n:match("^(%S+)")] = true end
    for name, t in pairs(own) do
        local src = sd[name]
        if src ~= nil and not bad[name] then t:copy(src) end
    end
    return report
end

function Module:training()
    self:apply(function(m) m.train = true end)
    return self
end

function Module:evaluate()
    self:apply(function(m) m.train = false end)
    return self
end

-- Moves every parameter, gradient and buffer to `device` ("cpu" or
-- "cuda"), in place; kept outputs are dropped (the next forward makes them
-- on the new device). A flattened model is flattened again there.
function Module:to(device)
    if device ~= "cpu" and device ~= "cuda" and device ~= "cuda:0" then
        error(("to: unknown device '%s' (expected 'cpu' or 'cuda')"):format(tostring(device)), 2)
    end
    if device ~= "cpu" and not mt.cuda_available() then
        error("to: device 'cuda' is not available (see mt.cuda_available())", 2)
    end
    local flat = self.flat_params ~= nil
    self:apply(function(m)
        for _, n in ipairs(m.param_order) do
            local e = m.params[n]
            e.param, e.grad = e.param:to(device), e.grad:to(device)
        end
        for _, n in ipairs(m.buffer_order) do
            if m.buffers[n] then m.buffers[n] = m.buffers[n]:to(device) end
        end
        for k, v in pairs(m) do
            if k ~= "workspace" and mt.is_tensor(v) then m[k] = nil end
        end
    end)
    self.device = device
    if flat then
        self.flat_params, self.flat_grads = nil, nil
        self:flatten_parameters()
    end
    return self
end

-- Moves every parameter and gradient into one flat buffer each (llm.c
-- style), so zero_grad, clipping and optimizer steps can be single passes.
-- The modules' tensors become views of the buffers.
function Module:flatten_parameters()
    local entries = {}
    local total = 0
    self:apply(function(m)
        for _, n in ipairs(m.param_order) do
            entries[#entries + 1] = m.params[n]
            total = total + m.params[n].param:numel()
        end
    end)
    local like = entries[1] and entries[1].param
    local flat_p = like and like:new_empty{math.max(total, 1)} or mt.empty{math.max(total, 1)}
    local flat_g = like and like:new_zeros{math.max(total, 1)} or mt.zeros{math.max(total, 1)}
    local offset = 0
    for _, e in ipairs(entries) do
        local n, shape = e.param:numel(), e.param:shape()
        local p = flat_p:narrow(1, offset + 1, n):reshape(shape)
        p:copy(e.param)
        e.param = p
        e.grad = flat_g:narrow(1, offset + 1, n):reshape(shape)
        offset = offset + n
    end
    self.flat_params, self.flat_grads = flat_p:narrow(1, 1, total), flat_g:narrow(1, 1, total)
    -- The per-parameter tensors just copied are garbage now: give their memory
    -- back to the system rather than keep it cached.
    collectgarbage()
    mt.empty_cache()
    return self
end

function Module:__tostring()
    local lines = {}
    self:apply(function(m, prefix)
        local depth = prefix == "" and 0 or select(2, prefix:gsub("%.", "")) + 1
        local label = prefix == "" and m.__name or ("(%s): %s"):format(prefix:match("[^.]+$"), m.__name)
        lines[#lines + 1] = ("  "):rep(depth) .. label .. (m.describe and ("(" .. m:describe() .. ")") or "")
    end)
    return table.concat(lines, "\n")
end

function Module:__call(...) return self:forward(...) end

-- What forward and backward keep between calls (Torch7's clearState).
local STATE_FIELDS = { "output", "output4", "save_mean", "save_invstd", "mask", "indices" }

local function clear_fields(m, keep, seen)
    if seen[m] then return end
    seen[m] = true
    for _, k in ipairs(STATE_FIELDS) do
        local t = rawget(m, k)
        if mt.is_tensor(t) and t ~= keep then Module.free(t) end
        m[k] = nil
    end
    m.inputs = nil
    -- Helper modules held outside `children` (a block's final ReLU).
    for k, v in pairs(m) do
        if k ~= "children" and type(v) == "table" and rawget(v, "child_order") and v.forward then
            clear_fields(v, keep, seen)
        end
    end
end

--- Releases every activation and saved tensor the tree holds (not the
--- caller's input), so memory goes back before a phase with other shapes:
--- evaluation after training, or the reverse. The next forward allocates
--- again; call it between phases, not every step.
function Module:clear_state()
    local keep = self.inputs and self.inputs[1]
    local seen = {}
    self:apply(function(m) clear_fields(m, keep, seen) end)
    return self
end

return Module
