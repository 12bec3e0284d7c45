-- Angular-margin classification: a cosine head and the losses that train it.
--
--   local head = nn.CosineLinear(d, classes, {scale = 30})  -- y = s cos(x, w_c), N x classes
--   local loss = nn.ArcFaceLoss(head, {margin = 0.5})       -- CE on s cos(theta_y + m)
--   local loss = nn.AdaCosLoss(head)                         -- CE with AdaCos's adaptive scale
--
-- The head's output is the plain scaled cosine (what prediction uses); the
-- losses change the true class's logit from the cosine that output carries
-- and hand back the gradient with respect to it, so a model that ends in the
-- head trains through the usual stepper (forward, loss, backward).
-- ArcFace (Deng et al. 2019) as insightface computes it: cos(theta + m) while
-- theta + m < pi, else cos(theta) - m sin(m). AdaCos (Zhang et al. 2019): no
-- margin; in training the scale becomes log(B_avg) / cos(min(pi/4, theta_med))
-- with B_avg the mean over the batch of the summed exp(s cos) of the other
-- classes and theta_med the batch median (the lower middle value, as
-- torch.median) of the true class's angle. The scale lives in the head's
-- buffer "scale", so it is saved and restored with the weights.
local mt = require "machrt"
local K = require "machrt.kernels"
local Module = require "machrt.nn.module"

local EPS = 1e-12 -- F.normalize's eps: a zero row stays zero

local CosineLinear = Module.class("CosineLinear", Module)

function CosineLinear:__init(cin, cout, opts)
    for _, v in ipairs{ cin, cout } do
        if math.type(v) ~= "integer" or v < 1 then error("CosineLinear: sizes must be positive integers", 3) end
    end
    local scale = opts and opts.scale or 30
    if type(scale) ~= "number" or not (scale > 0) then
        error("CosineLinear: scale must be a positive number, got " .. tostring(scale), 3)
    end
    self.cin, self.cout = cin, cout
    -- Xavier-uniform, as the reference implementations initialise the class centres.
    local bound = math.sqrt(6 / (cin + cout))
    self:register_parameter("weight", Module.uniform_param({ cout, cin }, bound))
    self:register_buffer("scale", mt.full({ 1 }, scale))
end

function CosineLinear:describe() return ("%d, %d, scale %g"):format(self.cin, self.cout, self:get_scale()) end

function CosineLinear:get_scale() return self.buffers.scale:to("cpu"):get(1) end

function CosineLinear:set_scale(s) self.buffers.scale:fill(s) end

local function normalize_rows(t)
    local norm = t:mul(t):sum(2):sqrt():maximum(EPS):reshape{ t:size(1), 1 }
    return t / norm, norm
end

function CosineLinear:forward(x)
    self:check_input(x, 2, 2, self.cin, ("N x %d"):format(self.cin))
    self.xn, self.xnorm = normalize_rows(x)
    self.wn, self.wnorm = normalize_rows(self.params.weight.param)
    self.cos = self.xn:matmul(self.wn:transpose(1, 2))
    self.output = self.cos * self:get_scale()
    return self.output
end

-- d/dx of x / |x| applied to g: (g - xn (xn . g)) / |x|.
local function normalize_backward(xn, norm, g)
    return (g - xn * (xn * g):sum(2):reshape{ xn:size(1), 1 }) / norm
end

function CosineLinear:backward(x, grad_output)
    local dcos = grad_output * self:get_scale()
    local dxn = dcos:matmul(self.wn)
    local dwn = dcos:transpose(1, 2):matmul(self.xn)
    self.params.weight.grad:add_(normalize_backward(self.wn, self.wnorm, dwn))
    return normalize_backward(self.xn, self.xnorm, dxn)
end

-- ---- losses ----------------------------------------------------------------

-- The true class of each row, 1-based: from int64 indices or one-hot rows.
local function true_classes(name, logits, target)
    if not mt.is_tensor(logits) or logits:dim() ~= 2 then error(name .. ": logits must be an N x C tensor", 3) end
    if not mt.is_tensor(target) then error(name .. ": target must be a tensor", 3) end
    local n, C = logits:size(1), logits:size(2)
    local t = target:to("cpu"):totable()
    local classes = {}
    if target:dtype() == "int64" then
        if target:dim() ~= 1 or #t ~= n then error(("%s: expected %d class indices"):format(name, n), 3) end
        for i = 1, n do classes[i] = t[i] end
    else
        if target:dim() ~= 2 or target:size(1) ~= n or target:size(2) ~= C then
            error(("%s: target must be %d x %d one-hot rows or %d int64 indices"):format(name, n, C, n), 3)
        end
        for i = 1, n do
            local best = 1
            for c = 2, C do if t[i][c] > t[i][best] then best = c end end
            classes[i] = best
        end
    end
    for i = 1, n do
        if math.type(classes[i]) ~= "integer" or classes[i] < 1 or classes[i] > C then
            error(("%s: class of row %d is %s, not in 1..%d"):format(name, i, tostring(classes[i]), C), 3)
        end
    end
    return classes
end

-- The losses run in the C core (K.margin_cross_entropy_*: the cross entropy
-- of the logits with the true class's cosine moved by the margin and every
-- logit at the loss's scale, forward and backward); each loss here says
-- which scales and margin: loss_scales(logits, classes) -> the scale the
-- logits carry, the margin, the scale of the loss's logits.
local function criterion(name)
    local c = {}
    c.__index = c
    c.__name = name
    setmetatable(c, { __call = function(cls, head, opts)
        if type(head) ~= "table" or not head.get_scale then
            error(name .. ": the first argument must be the nn.CosineLinear head it trains", 2)
        end
        local o = setmetatable({ head = head }, cls)
        o:__init(opts or {})
        return o
    end })
    --- forward(logits, target) -> mean loss; backward(logits, target) -> dlogits.
    function c:forward(logits, target)
        local classes = true_classes(name, logits, target)
        local index = {}
        for i, k in ipairs(classes) do index[i] = k - 1 end -- the kernel counts from 0
        local t = mt.tensor(index):long()
        self.target = logits:device() == "cpu" and t or t:to(logits:device())
        self.scales = { self:loss_scales(logits, classes) }
        local ok, v = pcall(K.margin_cross_entropy_forward, logits, self.target, table.unpack(self.scales))
        if not ok then error(name .. ": " .. tostring(v), 2) end
        self.loss = v
        return v
    end
    -- The gradient of the last forward's loss (at its scales; AdaCos moves
    -- the head's scale in forward).
    function c:backward(logits, target)
        if not self.scales then error(name .. ": backward before forward", 2) end
        local s = self.scales
        local ok, g = pcall(K.margin_cross_entropy_backward, logits, self.target, s[1], s[2], s[3])
        if not ok then error(name .. ": " .. tostring(g), 2) end
        return g
    end
    return c
end

local ArcFaceLoss = criterion("ArcFaceLoss")

function ArcFaceLoss:__init(opts)
    local m = opts.margin or 0.5
    if type(m) ~= "number" or m < 0 or m >= math.pi / 2 then
        error("ArcFaceLoss: margin must be a number in [0, pi/2), got " .. tostring(m), 3)
    end
    self.margin = m
end

function ArcFaceLoss:loss_scales()
    local s = self.head:get_scale()
    return s, self.margin, s
end

local AdaCosLoss = criterion("AdaCosLoss")

function AdaCosLoss:__init() end

-- No margin; in training the scale adapts to the batch (see the header) and
-- the loss's logits are at the new scale.
function AdaCosLoss:loss_scales(logits, classes)
    local s = self.head:get_scale()
    if not self.head.train then return s, 0, s end
    local b_sum, thetas = 0, {}
    for i, r in ipairs(logits:to("cpu"):totable()) do
        for k = 1, #r do
            if k ~= classes[i] then b_sum = b_sum + math.exp(r[k]) end
        end
        thetas[i] = math.acos(math.max(-1 + 1e-7, math.min(1 - 1e-7, r[classes[i]] / s)))
    end
    table.sort(thetas)
    local median = thetas[(#thetas + 1) // 2]
    local new_s = math.log(b_sum / #thetas) / math.cos(math.min(math.pi / 4, median))
    self.head:set_scale(new_s)
    return s, 0, new_s
end

return { CosineLinear = CosineLinear, ArcFaceLoss = ArcFaceLoss, AdaCosLoss = AdaCosLoss }
