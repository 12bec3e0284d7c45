-- machrt.optim: AdamW and SGD with PyTorch's update rules and defaults,
-- parameter groups, the cosine schedule and global-norm gradient clipping.
--
-- Parameters are the entries nn modules' :parameters() return,
-- {name =, param =, grad =}; the optimizer keeps those entry tables and reads
-- `grad` at every step, so gradients that accumulate over several backward
-- calls (gradient accumulation) are simply stepped on once. The updates
-- themselves are C kernels (runtime/optim), one pass per parameter.
local mt = require "machrt"
local K = require "machrt.kernels"

local optim = {}

local function fail(fmt, ...) error(fmt:format(...), 0) end

local function is_number(v) return type(v) == "number" and v == v end

local function fmt_value(v)
    if type(v) == "string" then return ("%q"):format(v) end
    if type(v) == "table" then
        local parts = {}
        for i = 1, #v do parts[i] = tostring(v[i]) end
        return "{" .. table.concat(parts, ", ") .. "}"
    end
    return tostring(v)
end

-- ---- hyperparameters -------------------------------------------------------

-- Checkers return an error text or nil.
local function non_negative(v)
    if not is_number(v) or v < 0 then return "must be a non-negative number" end
end
local function any_number(v)
    if not is_number(v) then return "must be a number" end
end
local function boolean(v)
    if type(v) ~= "boolean" then return "must be a boolean" end
end
local function betas(v)
    if type(v) ~= "table" or #v ~= 2 then return "must be a pair {beta1, beta2}" end
    for i = 1, 2 do
        if not is_number(v[i]) or v[i] < 0 or v[i] >= 1 then
            return ("beta%d must be in [0, 1)"):format(i)
        end
    end
end

-- Per optimizer: its hyperparameters (in state_dict order), their checks
-- and PyTorch's defaults (SGD has no default lr, as in PyTorch), the state
-- tensors kept per parameter, and the update.
local KINDS = {}

KINDS.AdamW = {
    keys = {"lr", "betas", "eps", "weight_decay", "amsgrad"},
    check = {lr = non_negative, betas = betas, eps = non_negative,
                      weight_decay = non_negative, amsgrad = boolean},
    defaults = {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 1e-2, amsgrad = false},
    -- A parameter has AdamW state once it has been stepped (step >= 1).
    counts_steps = true,
    state_tensors = function(g)
        if g.amsgrad then return {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"} end
        return {"exp_avg", "exp_avg_sq"}
    end,
    -- State is committed only after the kernel succeeded (it checks
    -- everything before writing), so a failed step leaves no trace.
    update = function(e, s, g)
        local m, v, vmax = s.exp_avg, s.exp_avg_sq, s.max_exp_avg_sq
        if not m then
            m, v = e.param:new_zeros(), e.param:new_zeros() -- on the parameter's device
        end
        -- amsgrad may have been switched on after earlier steps.
        if g.amsgrad and not vmax then vmax = e.param:new_zeros() end
        local step = (s.step or 0) + 1
        K.adamw_step(e.param, e.grad, m, v, g.amsgrad and vmax or nil, g, step)
        s.step, s.exp_avg, s.exp_avg_sq, s.max_exp_avg_sq = step, m, v, vmax
    end,
}

KINDS.SGD = {
    keys = {"lr", "momentum", "dampening", "weight_decay", "nesterov"},
    check = {lr = non_negative, momentum = non_negative, dampening = any_number,
                      weight_decay = non_negative, nesterov = boolean},
    defaults = {momentum = 0, dampening = 0, weight_decay = 0, nesterov = false},
    counts_steps = false,
    state_tensors = function(g)
        if g.momentum ~= 0 then return {"momentum_buffer"} end
        return {}
    end,
    update = function(e, s, g)
        local buf, first = s.momentum_buffer, false
        if g.momentum ~= 0 and not buf then
            -- The first step sets the buffer to the gradient (PyTorch's clone).
            buf, first = e.param:new_zeros(), true
        end
        K.sgd_step(e.param, e.grad, g.momentum ~= 0 and buf or nil, g, first)
        s.momentum_buffer = buf
    end,
}

-- Extra group keys that state_dict keeps besides the hyperparameters:
-- `initial_lr` (what schedules scale) and `name` (what logs show).
local EXTRA_KEYS = {initial_lr = "number", name = "string"}

local function check_group(kind, where, g)
    local spec = KINDS[kind]
    for _, key in ipairs(spec.keys) do
        if g[key] == nil then
            if key == "lr" then fail("%s: %slr is required", kind, where) end
            fail("%s: %s%s is missing", kind, where, key)
        end
        local why = spec.check[key](g[key])
        if why then fail("%s: %s%s %s, got %s", kind, where, key, why, fmt_value(g[key])) end
    end
    if kind == "SGD" and g.nesterov and (g.momentum <= 0 or g.dampening ~= 0) then
        fail("SGD: %snesterov needs momentum > 0 and dampening 0 (got momentum %s, dampening %s)",
                  where, g.momentum, g.dampening)
    end
end

-- ---- parameters ------------------------------------------------------------

local function check_entry(kind, e, where)
    if type(e) ~= "table" then
        fail("%s: %s must be a table {name =, param =, grad =}, got %s", kind, where, type(e))
    end
    if not mt.is_tensor(e.param) then fail("%s: %s has no param tensor", kind, where) end
    if not mt.is_tensor(e.grad) then fail("%s: %s has no grad tensor", kind, where) end
    local p, g = e.param, e.grad
    local ps, gs = table.concat(p:shape(), "x"), table.concat(g:shape(), "x")
    if ps ~= gs then fail("%s: %s: grad has shape %s, the parameter %s", kind, where, gs, ps) end
    if p:dtype() ~= "float32" or g:dtype() ~= "float32" then
        fail("%s: %s: param and grad must be float32", kind, where)
    end
    if not p:is_contiguous() or not g:is_contiguous() then
        fail("%s: %s: param and grad must be contiguous", kind, where)
    end
end

local function describe(e, index)
    if type(e) == "table" and type(e.name) == "string" then
        return ("parameter '%s'"):format(e.name)
    end
    return ("parameter %d"):format(index)
end

-- Builds the group tables from a list of entries or a list of groups. Each
-- group is a fresh table (the caller's tables are left as they are) holding
-- every hyperparameter, the option's value where the group sets none.
local function build_groups(kind, params, opts)
    if type(params) ~= "table" then
        fail("%s: expected a list of parameters {name =, param =, grad =} or of groups "
                  .. "{params = {...}, ...}, got %s", kind, type(params))
    end
    if #params == 0 then fail("%s: the parameter list is empty", kind) end
    local raw = params
    if type(params[1]) ~= "table" or params[1].params == nil then raw = {{params = params}} end

    local spec = KINDS[kind]
    local groups, names, seen_name, seen_tensor, index = {}, {}, {}, {}, 0
    for gi, rg in ipairs(raw) do
        if type(rg) ~= "table" or type(rg.params) ~= "table" then
            fail("%s: group %d must be a table with a params list", kind, gi)
        end
        local g = {}
        for key, v in pairs(rg) do
            if key ~= "params" then g[key] = v end
        end
        for _, key in ipairs(spec.keys) do
            if g[key] == nil then g[key] = opts[key] end
        end
        if type(g.betas) == "table" then g.betas = {g.betas[1], g.betas[2]} end
        if g.initial_lr == nil then g.initial_lr = g.lr end
        check_group(kind, #raw > 1 and ("param_groups[%d]."):format(gi) or "", g)
        g.params = {}
        for _, e in ipairs(rg.params) do
            index = index + 1
            local what = describe(e, index)
            check_entry(kind, e, what)
            -- Unnamed entries are named by position, as PyTorch numbers them.
            local name = e.name ~= nil and tostring(e.name) or tostring(index)
            if name:find(",", 1, true) then fail("%s: %s: names must not contain ','", kind, what) end
            if seen_name[name] then fail("%s: two parameters are named '%s'", kind, name) end
            if seen_tensor[e.param] then
                fail("%s: %s appears more than once (in one group or in two)", kind, what)
            end
            seen_name[name], seen_tensor[e.param] = true, true
            names[e] = name
            g.params[#g.params + 1] = e
        end
        groups[gi] = g
    end
    return groups, names
end

-- ---- the optimizer object --------------------------------------------------

local Optimizer = {}
Optimizer.__index = Optimizer

function Optimizer:__tostring()
    local parts = {}
    for i, g in ipairs(self.param_groups) do
        local hp = {}
        for _, key in ipairs(KINDS[self.kind].keys) do hp[#hp + 1] = key .. "=" .. fmt_value(g[key]) end
        local label = g.name and (" (" .. g.name .. ")") or ""
        parts[i] = ("  group %d%s: %d parameters, %s"):format(i, label, #g.params, table.concat(hp, " "))
    end
    return self.kind .. "\n" .. table.concat(parts, "\n")
end

local function new(kind, params, opts, defaults)
    if opts ~= nil and type(opts) ~= "table" then
        fail("%s: options must be a table, got %s", kind, type(opts))
    end
    opts = opts or {}
    local spec = KINDS[kind]
    local known = {}
    for _, key in ipairs(spec.keys) do known[key] = true end
    for key in pairs(opts) do
        if not known[key] then fail("%s: unknown option '%s'", kind, tostring(key)) end
    end
    local merged = {}
    for _, key in ipairs(spec.keys) do
        if opts[key] ~= nil then merged[key] = opts[key] else merged[key] = defaults[key] end
    end
    local groups, names = build_groups(kind, params, merged)
    return setmetatable({kind = kind, param_groups = groups, state = {}, _names = names}, Optimizer)
end

-- optim.AdamW(params_or_groups, {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8,
--                                weight_decay = 1e-2, amsgrad = false})
function optim.AdamW(params, opts) return new("AdamW", params, opts, KINDS.AdamW.defaults) end

-- optim.SGD(params_or_groups, {lr (required), momentum = 0, dampening = 0,
--                              weight_decay = 0, nesterov = false})
function optim.SGD(params, opts) return new("SGD", params, opts, KINDS.SGD.defaults) end

function Optimizer:step()
    local spec = KINDS[self.kind]
    for gi, g in ipairs(self.param_groups) do
        -- Schedules and scripts write lr between steps: check it here, by name.
        local why = spec.check.lr(g.lr)
        if why then fail("%s: param_groups[%d].lr %s, got %s", self.kind, gi, why, fmt_value(g.lr)) end
        for i, e in ipairs(g.params) do
            local name = self._names[e]
            if not mt.is_tensor(e.grad) then
                fail("%s: parameter '%s' has no grad tensor", self.kind, name)
            end
            local s = self.state[name]
            if not s then
                s = {}
                self.state[name] = s
            end
            local ok, err = pcall(spec.update, e, s, g)
            if not ok then
                fail("%s: param_groups[%d] parameter %d ('%s'): %s", self.kind, gi, i, name, err)
            end
        end
    end
end

-- Fills every gradient with 0 (gradients accumulate across backward calls).
function Optimizer:zero_grad()
    for _, g in ipairs(self.param_groups) do
        for _, e in ipairs(g.params) do e.grad:fill(0) end
    end
end

-- ---- state_dict --------------------------------------------------------------
--
-- Two tables, ready for mt.save(path, tensors, info):
--   tensors  "state.<param name>.<exp_avg | exp_avg_sq | max_exp_avg_sq |
--            momentum_buffer>" (the live state tensors, not copies)
--   info     strings only (safetensors metadata): "optimizer" = "AdamW",
--            "param_groups" = count, "group.<i>.params" = comma-separated
--            parameter names, "group.<i>.<hyperparameter>", and
--            "state.<param name>.step" for AdamW.

local function encode(v)
    if type(v) == "number" then
        if math.type(v) == "integer" then return tostring(v) end
        return ("%.17g"):format(v)
    elseif type(v) == "table" then
        return ("%.17g,%.17g"):format(v[1], v[2])
    end
    return tostring(v)
end

-- The inverse of encode for a key's expected kind; nil when it does not parse.
local function decode(key, s)
    if type(s) ~= "string" then
        if type(s) == "number" or type(s) == "boolean" then return s end
        return nil
    end
    if key == "betas" then
        local a, b = s:match("^%s*([^,]+),([^,]+)%s*$")
        a, b = tonumber(a), tonumber(b)
        return a and b and {a, b} or nil
    elseif key == "amsgrad" or key == "nesterov" then
        if s == "true" then return true elseif s == "false" then return false end
        return nil
    elseif key == "name" then
        return s
    end
    return tonumber(s)
end

function Optimizer:state_dict()
    local spec = KINDS[self.kind]
    local tensors, info = {}, {optimizer = self.kind, param_groups = tostring(#self.param_groups)}
    for gi, g in ipairs(self.param_groups) do
        local prefix = ("group.%d."):format(gi)
        local names = {}
        for i, e in ipairs(g.params) do names[i] = self._names[e] end
        info[prefix .. "params"] = table.concat(names, ",")
        for _, key in ipairs(spec.keys) do info[prefix .. key] = encode(g[key]) end
        for key, kind in pairs(EXTRA_KEYS) do
            if type(g[key]) == kind then info[prefix .. key] = encode(g[key]) end
        end
        for _, e in ipairs(g.params) do
            local name = self._names[e]
            local s = self.state[name]
            if s then
                if s.step then info["state." .. name .. ".step"] = tostring(s.step) end
                for _, t in ipairs(spec.state_tensors(g)) do
                    if s[t] then tensors["state." .. name .. "." .. t] = s[t] end
                end
            end
        end
    end
    return tensors, info
end

local function split(s)
    local list = {}
    if s == "" then return list end
    for part in (s .. ","):gmatch("([^,]*),") do list[#list + 1] = part end
    return list
end

-- Loads what state_dict returned (or what mt.load read back). Everything is
-- checked before anything changes: the optimizer kind, the groups and their
-- parameter names, every hyperparameter, and every state tensor's presence
-- and shape. Hyperparameters (lr included) are restored, as PyTorch does.
-- Tensors whose names do not start with "state." are ignored, so a
-- checkpoint holding the model weights too can be passed whole.
function Optimizer:load_state_dict(tensors, info)
    local kind, spec = self.kind, KINDS[self.kind]
    if type(tensors) ~= "table" or type(info) ~= "table" then
        fail("%s:load_state_dict: expected (tensors, info) tables as state_dict returns them", kind)
    end
    local function bad(fmt, ...) fail("%s:load_state_dict: " .. fmt, kind, ...) end
    if info.optimizer ~= kind then
        bad("the state is for %s, this optimizer is %s",
                tostring(info.optimizer or "(no optimizer key)"), kind)
    end
    local ngroups = tonumber(info.param_groups)
    if ngroups ~= #self.param_groups then
        bad("the state has %s parameter groups, this optimizer %d", tostring(info.param_groups),
                #self.param_groups)
    end

    local new_groups, new_state, used = {}, {}, {}
    for gi, g in ipairs(self.param_groups) do
        local prefix = ("group.%d."):format(gi)
        local saved = info[prefix .. "params"]
        if type(saved) ~= "string" then bad("%sparams is missing", prefix) end
        local own, theirs, in_own, in_theirs = {}, split(saved), {}, {}
        for i, e in ipairs(g.params) do own[i] = self._names[e]; in_own[own[i]] = true end
        for _, n in ipairs(theirs) do in_theirs[n] = true end
        local missing, unexpected = {}, {}
        for _, n in ipairs(own) do if not in_theirs[n] then missing[#missing + 1] = n end end
        for _, n in ipairs(theirs) do if not in_own[n] then unexpected[#unexpected + 1] = n end end
        if #missing > 0 or #unexpected > 0 then
            bad("group %d parameters differ: missing in the state: %s; not in this optimizer: %s", gi,
                    #missing > 0 and table.concat(missing, ", ") or "none",
                    #unexpected > 0 and table.concat(unexpected, ", ") or "none")
        end
        if table.concat(own, ",") ~= saved then
            bad("group %d lists its parameters in another order", gi)
        end

        local ng = {}
        for _, key in ipairs(spec.keys) do
            local raw = info[prefix .. key]
            if raw == nil then bad("%s%s is missing", prefix, key) end
            local v = decode(key, raw)
            if v == nil then bad("%s%s = %s does not parse", prefix, key, fmt_value(raw)) end
            ng[key] = v
        end
        for key in pairs(EXTRA_KEYS) do
            local raw = info[prefix .. key]
            if raw ~= nil then ng[key] = decode(key, raw) end
        end
        local ok, err = pcall(check_group, kind, prefix, ng)
        if not ok then bad("%s", (err:gsub("^" .. kind .. ": ", ""))) end
        new_groups[gi] = ng

        for _, e in ipairs(g.params) do
            local name = self._names[e]
            local shape = table.concat(e.param:shape(), "x")
            local s, any = {}, false
            for _, t in ipairs(spec.state_tensors(ng)) do
                local key = "state." .. name .. "." .. t
                local v = tensors[key]
                if v ~= nil then
                    if not mt.is_tensor(v) then bad("%s is not a tensor", key) end
                    if v:dtype() ~= "float32" then bad("%s must be float32, got %s", key, v:dtype()) end
                    local vs = table.concat(v:shape(), "x")
                    if vs ~= shape then bad("%s has shape %s, the parameter %s", key, vs, shape) end
                    s[t], any, used[key] = v, true, true
                end
            end
            local step_key = "state." .. name .. ".step"
            if spec.counts_steps then
                local step = info[step_key]
                if step ~= nil then
                    step = math.tointeger(tonumber(step))
                    if not step or step < 1 then
                        bad("%s = %s is not a step count", step_key, fmt_value(info[step_key]))
                    end
                    for _, t in ipairs(spec.state_tensors(ng)) do
                        if not s[t] then
                            bad("state.%s.%s is missing (the state has step %d)", name, t, step)
                        end
                    end
                    s.step = step
                elseif any then
                    bad("%s is missing (the state has tensors for '%s')", step_key, name)
                end
            end
            if any then new_state[name] = s end
        end
    end
    local extra = {}
    for key in pairs(tensors) do
        if type(key) == "string" and key:sub(1, 6) == "state." and not used[key] then
            extra[#extra + 1] = key
        end
    end
    if #extra > 0 then
        table.sort(extra)
        bad("unexpected state tensors: %s", table.concat(extra, ", "))
    end

    -- All checked: now replace. Keys the state does not carry (params, and
    -- any of the caller's own) stay. Copies, so the caller's tensors stay theirs.
    for gi, g in ipairs(self.param_groups) do
        for key, v in pairs(new_groups[gi]) do g[key] = v end
    end
    self.state = {}
    for name, s in pairs(new_state) do
        local copy = {step = s.step}
        for key, v in pairs(s) do
            if key ~= "step" then copy[key] = v:clone() end
        end
        self.state[name] = copy
    end
end

-- ---- parameter groups --------------------------------------------------------

-- The default no-decay rule: biases, norm weights (1-D parameters of a
-- module whose name has "bn" or "norm" in it, or a torchvision downsample's
-- BatchNorm "downsample.1") and GeM's exponent "pool.p".
function optim.no_decay(name, p)
    if name == "bias" or name:sub(-5) == ".bias" then return true end
    if name == "pool.p" or name:sub(-7) == ".pool.p" then return true end
    if p:dim() == 1 then
        local module = name:match("^(.*)%.[^.]*$") or ""
        local last = (module:match("[^.]*$") or ""):lower()
        if last:find("bn", 1, true) or last:find("norm", 1, true) then return true end
        if module == "downsample.1" or module:sub(-13) == ".downsample.1" then return true end
    end
    return false
end

-- Whether `name` lies under one of `layers`, matched on whole dotted
-- segments ("layer1" takes layer1.0.conv1.weight but not layer10.x).
local function in_layers(name, layers)
    local dotted = "." .. name .. "."
    for _, layer in ipairs(layers) do
        if dotted:find("." .. layer .. ".", 1, true) then return true end
    end
    return false
end

local PG_OPTIONS = {weight_decay = true, no_decay = true, lr = true, differential_lr = true,
                                        differential_layers = true}

-- The groups of the reference setup (H2O Hydrogen Torch's), in this order,
-- empty ones left out:
--   decay                  lr, weight_decay
--   no_decay               lr, weight_decay 0
--   differential           differential_lr, weight_decay
--   differential_no_decay  differential_lr, weight_decay 0
-- Differential groups hold the parameters under `differential_layers`. An
-- option left nil leaves the optimizer's default in force.
function optim.param_groups(named, opts)
    opts = opts or {}
    if type(named) ~= "table" then
        fail("param_groups: expected a list of {name =, param =, grad =}, got %s", type(named))
    end
    if type(opts) ~= "table" then
        fail("param_groups: options must be a table, got %s", type(opts))
    end
    for key in pairs(opts) do
        if not PG_OPTIONS[key] then fail("param_groups: unknown option '%s'", tostring(key)) end
    end
    for _, key in ipairs({"weight_decay", "lr", "differential_lr"}) do
        local v = opts[key]
        if v ~= nil and (not is_number(v) or v < 0) then
            fail("param_groups: %s must be a non-negative number, got %s", key, fmt_value(v))
        end
    end
    local no_decay = opts.no_decay or optim.no_decay
    if type(no_decay) ~= "function" then
        fail("param_groups: no_decay must be a function(name, param)")
    end
    local layers = opts.differential_layers or {}
    if type(layers) ~= "table" then
        fail("param_groups: differential_layers must be a list of names")
    end
    for i, l in ipairs(layers) do
        if type(l) ~= "string" or l == "" then
            fail("param_groups: differential_layers[%d] must be a name", i)
        end
    end
    local dlr = opts.differential_lr or opts.lr
    local groups = {
        {name = "decay", params = {}, lr = opts.lr, weight_decay = opts.weight_decay},
        {name = "no_decay", params = {}, lr = opts.lr, weight_decay = 0},
        {name = "differential", params = {}, lr = dlr, weight_decay = opts.weight_decay},
        {name = "differential_no_decay", params = {}, lr = dlr, weight_decay = 0},
    }
    for i, e in ipairs(named) do
        if type(e) ~= "table" or type(e.name) ~= "string" or not mt.is_tensor(e.param) then
            fail("param_groups: entry %d must be {name = string, param = tensor, grad = tensor}", i)
        end
        local k = (in_layers(e.name, layers) and 3 or 1) + (no_decay(e.name, e.param) and 1 or 0)
        local list = groups[k].params
        list[#list + 1] = e
    end
    local out = {}
    for _, g in ipairs(groups) do
        if #g.params > 0 then out[#out + 1] = g end
    end
    return out
end

-- ---- schedule ------------------------------------------------------------------

-- optim.cosine{base_lr, warmup_steps = 0, total_steps, min_lr = 0} -> lr(step):
-- linear warmup from 0 to base_lr over warmup_steps, then a half cosine from
-- base_lr down to min_lr at total_steps, min_lr after. Step k is the rate
-- after k optimizer steps, so set the groups' lr to lr(k) before step k + 1.
-- With base_lr = 1 it gives the factor for groups with their own rates:
-- g.lr = g.initial_lr * f(k).
function optim.cosine(opts)
    if type(opts) ~= "table" then fail("cosine: expected {base_lr =, total_steps =, ...}") end
    local base = opts.base_lr or opts[1]
    local warmup, total, min_lr = opts.warmup_steps or 0, opts.total_steps, opts.min_lr or 0
    if not is_number(base) or base < 0 then
        fail("cosine: base_lr must be a non-negative number, got %s", fmt_value(base))
    end
    if not is_number(total) or total ~= math.floor(total) or total < 1 then
        fail("cosine: total_steps must be a positive integer, got %s", fmt_value(total))
    end
    if not is_number(warmup) or warmup < 0 or warmup > total or warmup ~= math.floor(warmup) then
        fail("cosine: warmup_steps must be an integer in [0, total_steps], got %s", fmt_value(warmup))
    end
    if not is_number(min_lr) or min_lr < 0 then
        fail("cosine: min_lr must be a non-negative number, got %s", fmt_value(min_lr))
    end
    local span = math.max(1, total - warmup)
    return function(step)
        if not is_number(step) or step < 0 then
            fail("cosine: step must be a non-negative number, got %s", fmt_value(step))
        end
        if step < warmup then return base * step / warmup end
        local progress = math.min(1, (step - warmup) / span)
        return min_lr + (base - min_lr) * (1 + math.cos(math.pi * progress)) / 2
    end
end

-- ---- clipping ------------------------------------------------------------------

-- The gradients of: an optimizer, a list of groups, a list of
-- {name =, param =, grad =} entries, or a list of gradient tensors.
local function collect_grads(params)
    if type(params) ~= "table" then
        fail("clip_grad_norm: expected parameters, got %s", type(params))
    end
    if params.param_groups then params = params.param_groups end
    local grads = {}
    local function add(e, where)
        if mt.is_tensor(e) then
            grads[#grads + 1] = e
        elseif type(e) == "table" and mt.is_tensor(e.grad) then
            grads[#grads + 1] = e.grad
        else
            fail("clip_grad_norm: %s has no grad tensor", where)
        end
    end
    for i, e in ipairs(params) do
        if type(e) == "table" and type(e.params) == "table" then
            for j, x in ipairs(e.params) do add(x, ("group %d entry %d"):format(i, j)) end
        else
            local named = type(e) == "table" and e.name
            add(e, named and ("parameter '" .. tostring(e.name) .. "'") or ("entry " .. i))
        end
    end
    return grads
end

-- torch.nn.utils.clip_grad_norm_: the global L2 norm over all gradients; when
-- max_norm / (norm + 1e-6) < 1 every gradient is scaled by it. Returns the
-- norm before clipping.
function optim.clip_grad_norm(params, max_norm)
    if not is_number(max_norm) or max_norm < 0 then
        fail("clip_grad_norm: max_norm must be a non-negative number, got %s", fmt_value(max_norm))
    end
    local grads = collect_grads(params)
    local sq = 0.0
    for _, g in ipairs(grads) do sq = sq + K.sum_squares(g) end
    local norm = math.sqrt(sq)
    local coef = max_norm / (norm + 1e-6)
    if coef < 1 then
        for _, g in ipairs(grads) do g:mul_(coef) end
    end
    return norm
end

return optim
