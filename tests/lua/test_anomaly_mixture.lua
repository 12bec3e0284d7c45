-- The diagonal Gaussian mixture of the embedding detector's frame score
-- (machrt.anomaly.mixture) against scikit-learn's GaussianMixture
-- (tests/fixtures/gmm.safetensors, from gen_gmm_fixtures.py): the E and M
-- steps from a given start, the log-density, and the fit's refusals.
local mt = require "machrt"
local mixture = require "machrt.anomaly.mixture"
local A = require "assert"

local tests = {}

local FX = mt.load("tests/fixtures/gmm.safetensors")

local function fx(name)
    return FX[name] or error("fixture tensor " .. name .. " missing (rerun gen_gmm_fixtures.py)", 2)
end

local function near(t, want, tol, what)
    local e = (t:contiguous() - want):abs():max() / math.max(want:abs():max(), 1e-12)
    if not (e <= tol) then error(("%s: relative error %.3g above %.3g"):format(what, e, tol), 2) end
end

local function start()
    return { weights = fx("init.weights"), means = fx("init.means"), variances = fx("init.variances") }
end

tests["EM steps match scikit-learn's diagonal GaussianMixture"] = function()
    for _, steps in ipairs{ 1, 5 } do
        local g, ran = mixture.em(fx("x"), start(), steps, 1e-3)
        A.eq(ran, steps)
        local p = "step" .. steps .. "."
        near(g.weights, fx(p .. "weights"), 1e-5, p .. "weights")
        near(g.means, fx(p .. "means"), 1e-4, p .. "means")
        near(g.variances, fx(p .. "variances"), 1e-4, p .. "variances")
    end
end

tests["the log-density matches scikit-learn's score_samples"] = function()
    local g = mixture.em(fx("x"), start(), 5, 1e-3)
    near(mixture.log_density(g, fx("q")), fx("step5.log_density"), 1e-5, "log_density")
    A.near(mixture.score(g, fx("q")), -fx("step5.log_density"):mean(), 1e-4)
end

tests["a hand-worked one-component mixture is the Gaussian of the rows"] = function()
    -- Rows 0, 2 and 4 in one dimension: mean 2, variance 8/3 (+ reg).
    local x = mt.tensor{ { 0 }, { 2 }, { 4 } }
    local g = mixture.fit(x, { components = 1, reg = 0 })
    A.near(g.weights:get(1), 1, 1e-6)
    A.near(g.means:get(1, 1), 2, 1e-6)
    A.near(g.variances:get(1, 1), 8 / 3, 1e-5)
    -- log N(2 | 2, 8/3) = -0.5 (log 2 pi + log 8/3)
    A.near(mixture.log_density(g, mt.tensor{ { 2 } }):get(1), -0.5 * (math.log(2 * math.pi) + math.log(8 / 3)), 1e-5)
end

tests["fit separates clusters and raises the likelihood of its rows"] = function()
    local x = fx("x")
    local g = mixture.fit(x, { components = 3 })
    local one = mixture.fit(x, { components = 1 })
    A.truthy(mixture.score(g, x) < mixture.score(one, x) - 0.5, "three components explain three clusters better")
    local w = g.weights:totable()
    A.near(w[1] + w[2] + w[3], 1, 1e-5)
    -- Deterministic: a second fit gives the same mixture.
    A.eq(mixture.fit(x, { components = 3 }).means:totable(), g.means:totable())
end

tests["fit refuses too few rows and a wrong shape"] = function()
    A.raises(function() mixture.fit(mt.zeros{ 3, 2 }, { components = 8 }) end, "3 rows", "8 components")
    A.raises(function() mixture.fit(mt.zeros{ 12 }, {}) end, "N x D")
end

return tests
