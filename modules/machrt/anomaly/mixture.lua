-- A mixture of diagonal Gaussians over rows (a machine's normal log-mel
-- frames). One Gaussian of all of a machine's frames is a poor model when
-- its normal sound has several states (speeds, loads, the phases of a
-- cycle): the frames of a fault can lie between the states, inside the one
-- wide Gaussian. Fitted by expectation-maximisation as scikit-learn's
-- GaussianMixture(covariance_type = "diag") does it, from a deterministic
-- k-means start (so a run is repeatable without a random seed).
--
--   local g = mixture.fit(x, {components = 8})  -- x: N x D rows -> {weights K, means K x D, variances K x D}
--   local g = mixture.em(x, g, iterations, reg) -- that many E and M steps from g (what fit runs)
--   local lp = mixture.log_density(g, x)        -- N: the log-density of each row
--   local s = mixture.score(g, x)               -- minus the mean log-density of the rows
local mt = require "machrt"

local M = {}

--- scikit-learn's defaults: regularisation added to every variance, the
--- most EM steps, and the change of the mean log-density that stops them.
M.REG, M.ITERATIONS, M.TOL = 1e-3, 100, 1e-3
M.KMEANS_ITERATIONS = 10

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end

local LOG_2PI = math.log(2 * math.pi)

-- Each row's log-density under each component plus the log of its weight
-- (N x K): the squared distance expanded into three products, so that it
-- is two matrix products rather than N x K x D differences.
local function weighted_log_prob(g, x, x2)
    local D = x:size(2)
    local prec = 1 / g.variances                                   -- K x D
    local quad = (x2 or x * x):matmul(prec:transpose(1, 2))        -- N x K
        - x:matmul((g.means * prec):transpose(1, 2)) * 2
        + (g.means * g.means * prec):sum(2):reshape{ 1, -1 }
    local log_det = g.variances:log():sum(2):reshape{ 1, -1 }      -- 1 x K
    return (quad + log_det + D * LOG_2PI) * -0.5 + g.weights:log():reshape{ 1, -1 }
end

-- log sum exp over the components of each row (N), and the responsibilities (N x K).
local function log_sum_exp(lp)
    local top = lp:max(2):reshape{ -1, 1 }
    local e = (lp - top):exp()
    local total = e:sum(2):reshape{ -1, 1 }
    return (total:log() + top):reshape{ -1 }, e / total
end

--- The log-density of each row of x (N) under the mixture g.
function M.log_density(g, x)
    return (log_sum_exp(weighted_log_prob(g, x)))
end

--- Minus the mean log-density of the rows of x: higher is more anomalous.
function M.score(g, x)
    return -M.log_density(g, x):mean()
end

-- The M step from responsibilities r (N x K), as scikit-learn's diagonal
-- case: weights nk / N, means r'x / nk, variances r'x^2 / nk - mean^2 + reg.
local function m_step(x, x2, r, reg)
    local nk = r:sum(1) + 1e-6                                      -- K; a floor as scikit-learn's 10 eps
    local rt = r:transpose(1, 2)
    local means = rt:matmul(x) / nk:reshape{ -1, 1 }
    local sq = rt:matmul(x2) / nk:reshape{ -1, 1 }
    -- A variance that rounding drove below zero is 0 before the regularisation.
    local variances = (sq - means * means):relu() + reg
    return { weights = nk / nk:sum(), means = means, variances = variances }
end

--- `iterations` E and M steps from the mixture g (scikit-learn's order: the
--- responsibilities of g, then new parameters), stopping early when the mean
--- log-density changes by less than tol (nil: never). Returns the new
--- mixture and the number of steps run.
function M.em(x, g, iterations, reg, tol)
    local before, x2 = -math.huge, x * x
    for it = 1, iterations do
        local lse, r = log_sum_exp(weighted_log_prob(g, x, x2))
        local now = lse:mean()
        g = m_step(x, x2, r, reg or M.REG)
        if tol and math.abs(now - before) < tol then return g, it end
        before = now
    end
    return g, iterations
end

-- Hard assignment of each row to its nearest centre (N x K one-hot).
local function nearest(x, centres)
    local d = (centres * centres):sum(2):reshape{ 1, -1 } - x:matmul(centres:transpose(1, 2)) * 2
    local _, idx = d:min(2)
    local K, at = centres:size(1), idx:totable()
    local r = mt.zeros{ x:size(1), K }
    for i, k in ipairs(at) do r:set(1, i, k) end
    return r, at
end

-- The rows' main direction (the first principal axis, by power iteration
-- from the all-ones vector) and each row's position along it.
local function main_axis_positions(x)
    local c = x - x:mean(1):reshape{ 1, -1 }
    local v = mt.ones{ x:size(2), 1 }
    for _ = 1, 30 do
        v = c:transpose(1, 2):matmul(c:matmul(v))
        v = v / math.max(math.sqrt((v * v):sum()), 1e-30)
    end
    return c:matmul(v):reshape{ -1 }:totable()
end

-- K starting centres without randomness: the rows at the K evenly spaced
-- quantiles of their positions along the main axis (the states that differ
-- most apart), then Lloyd's k-means steps; a centre left without rows
-- keeps its place.
local function kmeans(x, K, steps)
    local N = x:size(1)
    local level = main_axis_positions(x)
    local order = {}
    for i = 1, N do order[i] = i end
    table.sort(order, function(a, b) return level[a] < level[b] or (level[a] == level[b] and a < b) end)
    local centres = mt.empty{ K, x:size(2) }
    for k = 1, K do centres:select(1, k):copy(x:select(1, order[math.floor((k - 0.5) * N / K) + 1])) end
    local r
    for _ = 1, steps do
        r = nearest(x, centres)
        local n = r:sum(1):totable()
        local sums = r:transpose(1, 2):matmul(x)
        for k = 1, K do
            if n[k] > 0 then centres:select(1, k):copy(sums:select(1, k) / n[k]) end
        end
    end
    return (nearest(x, centres))
end

--- The mixture of opts.components (default 8) diagonal Gaussians of the
--- rows of x (N x D, N >= components): k-means responsibilities, one M
--- step, then EM (opts.iterations, opts.reg, opts.tol: scikit-learn's
--- defaults).
function M.fit(x, opts)
    opts = opts or {}
    local K = opts.components or 8
    if x:dim() ~= 2 then fail("mixture.fit: rows must be an N x D tensor, got %d dimensions", x:dim()) end
    if x:size(1) < K then
        fail("mixture.fit: %d rows cannot fit %d components (give at least as many rows)", x:size(1), K)
    end
    local g = m_step(x, x * x, kmeans(x, K, opts.kmeans_iterations or M.KMEANS_ITERATIONS), opts.reg or M.REG)
    return (M.em(x, g, opts.iterations or M.ITERATIONS, opts.reg, opts.tol or M.TOL))
end

return M
