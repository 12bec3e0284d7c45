-- Dynamic loss scaling for mixed-precision training, with the semantics of
-- PyTorch's torch.cuda.amp.GradScaler: the loss gradient is multiplied by
-- `scale` before backward, so small gradients survive the fp16 GEMM
-- operands; before the optimizer step the gradients are divided by it
-- again (fp32 master weights and gradients), and a step whose gradients
-- hold an Inf or a NaN is skipped and the scale halved (backoff); after
-- growth_interval clean steps in a row the scale doubles (growth).
--
--   local scaler = amp.GradScaler()            -- init_scale 2^16, growth 2 every 2000, backoff 0.5
--   model:backward(x, scaler:scale(loss_fn:backward(logits, target)))
--   if scaler:unscale(model:parameters()) then opt:step() end   -- false: Inf/NaN, skip
--   scaler:update()
local M = {}

local Scaler = {}
Scaler.__index = Scaler

local function fail(fmt, ...) error(string.format(fmt, ...), 3) end

local function positive(opts, key, default)
    local v = opts[key]
    if v == nil then return default end
    if type(v) ~= "number" or not (v > 0) or v == math.huge then
        fail("GradScaler: %s must be a positive number, got %s", key, tostring(v))
    end
    return v
end

--- opts: init_scale (65536), growth_factor (2), backoff_factor (0.5),
--- growth_interval (2000 clean steps).
function M.GradScaler(opts)
    opts = opts or {}
    for k in pairs(opts) do
        if k ~= "init_scale" and k ~= "growth_factor" and k ~= "backoff_factor" and k ~= "growth_interval" then
            fail("GradScaler: unknown option '%s' (init_scale, growth_factor, backoff_factor, growth_interval)", tostring(k))
        end
    end
    local s = setmetatable({
        scale_value = positive(opts, "init_scale", 65536.0),
        growth_factor = positive(opts, "growth_factor", 2.0),
        backoff_factor = positive(opts, "backoff_factor", 0.5),
        growth_interval = math.tointeger(positive(opts, "growth_interval", 2000)),
        growth_tracker = 0,   -- clean steps since the last growth or backoff
        found_inf = false,    -- set by unscale, read by update
    }, Scaler)
    if not s.growth_interval then fail("GradScaler: growth_interval must be an integer") end
    if s.growth_factor <= 1 then fail("GradScaler: growth_factor must be above 1") end
    if s.backoff_factor >= 1 then fail("GradScaler: backoff_factor must be below 1") end
    return s
end

--- The current scale.
function Scaler:get_scale() return self.scale_value end

--- The loss gradient (a tensor) times the scale, in place.
function Scaler:scale(grad)
    return grad:mul_(self.scale_value)
end

--- Divides every gradient of `params` (a list of {grad = tensor}, as
--- module:parameters() returns; a flat model's gradients are views of one
--- buffer) by the scale, in place. Returns true when every gradient is
--- finite (the optimizer may step), false when one holds an Inf or a NaN
--- (skip the step; the gradients are left as they are).
function Scaler:unscale(params)
    self.found_inf = false
    for _, e in ipairs(params) do
        local s = e.grad:sum()
        if s ~= s or s == math.huge or s == -math.huge then
            self.found_inf = true
            return false
        end
    end
    local inv = 1.0 / self.scale_value
    for _, e in ipairs(params) do e.grad:mul_(inv) end
    return true
end

--- After each optimizer step (taken or skipped): backoff when the last
--- unscale found an Inf/NaN, growth after growth_interval clean steps.
function Scaler:update()
    if self.found_inf then
        self.scale_value = self.scale_value * self.backoff_factor
        self.growth_tracker = 0
    else
        self.growth_tracker = self.growth_tracker + 1
        if self.growth_tracker == self.growth_interval then
            self.scale_value = self.scale_value * self.growth_factor
            self.growth_tracker = 0
        end
    end
    self.found_inf = false
    return self.scale_value
end

--- {scale, growth_tracker}: saved with a checkpoint's run state.
function Scaler:state_dict()
    return { scale = self.scale_value, growth_tracker = self.growth_tracker }
end

function Scaler:load_state_dict(t)
    if type(t) ~= "table" or type(t.scale) ~= "number" or not math.tointeger(t.growth_tracker) then
        fail("GradScaler:load_state_dict: expected {scale = number, growth_tracker = integer}")
    end
    self.scale_value, self.growth_tracker = t.scale, math.tointeger(t.growth_tracker)
end

return M
