-- machrt.random: seeded Philox streams keyed by (seed, ids...), their ranges,
-- and the moments of their distributions (large samples, bounds several
-- standard errors wide, so they hold for any seed yet catch a wrong formula).

local mt = require "machrt"
local random = require "machrt.random"
local A = require "assert"

local T = {}
local function test(name, fn) T[#T + 1] = { name, fn } end

local function draws(n, f)
    local xs = {}
    for i = 1, n do xs[i] = f() end
    return xs
end

local function moments(xs)
    local s = 0
    for _, x in ipairs(xs) do s = s + x end
    local mean = s / #xs
    local v = 0
    for _, x in ipairs(xs) do v = v + (x - mean) ^ 2 end
    return mean, v / (#xs - 1)
end

test("the same seed and ids give the same sequence; other ids or seeds another", function()
    local function seq(...)
        local r = random.stream(...)
        return draws(64, function() return r:u32() end)
    end
    local a = seq(7, 1, 2)
    A.eq(seq(7, 1, 2), a)
    local others = { seq(7, 1, 3), seq(7, 2, 1), seq(8, 1, 2), seq(7, 1), seq(7, 1, 2, 0), seq(7) }
    for k, o in ipairs(others) do
        local same = 0
        for i = 1, #a do if a[i] == o[i] then same = same + 1 end end
        A.truthy(same <= 1, "stream " .. k .. " repeats the first one (" .. same .. " equal draws)")
    end
    -- Mixed draws replay too.
    local r1, r2 = random.stream(3, 9), random.stream(3, 9)
    for _ = 1, 50 do
        A.eq({ r1:uniform(), r1:normal(), r1:integer(1, 10), r1:gamma(2.5), r1:beta(2, 3) },
             { r2:uniform(), r2:normal(), r2:integer(1, 10), r2:gamma(2.5), r2:beta(2, 3) })
    end
end)

test("a stream without ids is Philox keyed by the seed, counters 0, 1, 2, ...", function()
    local r = random.stream(12345)
    local want = {}
    for c = 0, 2 do
        local a, b, x, y = mt.philox(c, 12345)
        for _, v in ipairs({ a, b, x, y }) do want[#want + 1] = v end
    end
    A.eq(draws(12, function() return r:u32() end), want)
end)

test("u32, uniform and integer stay in their ranges", function()
    local r = random.stream(1, 1)
    local lo_u, hi_u = math.huge, -math.huge
    for _ = 1, 5000 do
        local v = r:u32()
        A.truthy(math.type(v) == "integer" and v >= 0 and v < 2 ^ 32, "u32 " .. tostring(v))
        local u = r:uniform()
        A.truthy(math.type(u) == "float" and u >= 0 and u < 1, "uniform " .. u)
        local w = r:uniform(-3, 5)
        A.truthy(w >= -3 and w < 5, "uniform(-3, 5) " .. w)
        lo_u, hi_u = math.min(lo_u, w), math.max(hi_u, w)
        local k = r:integer(-2, 2)
        A.truthy(math.type(k) == "integer" and k >= -2 and k <= 2, "integer " .. tostring(k))
    end
    -- The range is used: ends within 1% of the interval.
    A.truthy(lo_u < -3 + 0.08 and hi_u > 5 - 0.08, lo_u .. " .. " .. hi_u)
    A.eq(r:integer(4, 4), 4)
    A.raises(function() r:integer(3, 2) end, "empty range [3, 2]")
end)

test("uniform(a, b) has mean (a+b)/2 and variance (b-a)^2/12", function()
    local r = random.stream(21, 4)
    local m, v = moments(draws(20000, function() return r:uniform(2, 6) end))
    A.truthy(math.abs(m - 4) < 0.05, "mean " .. m)   -- standard error 0.008
    A.truthy(math.abs(v / (16 / 12) - 1) < 0.05, "variance " .. v)
end)

test("integer(1, 6) covers every value with about equal counts", function()
    local r = random.stream(5, 0)
    local counts = { 0, 0, 0, 0, 0, 0 }
    local n = 12000
    for _ = 1, n do
        local k = r:integer(1, 6)
        counts[k] = counts[k] + 1
    end
    A.eq(#counts, 6)
    for k = 1, 6 do
        -- Expected 2000 each, standard deviation about 41.
        A.truthy(math.abs(counts[k] - 2000) < 200, "value " .. k .. " drawn " .. counts[k] .. " times")
    end
    local chi2 = 0
    for k = 1, 6 do chi2 = chi2 + (counts[k] - 2000) ^ 2 / 2000 end
    A.truthy(chi2 < 25, "chi-square " .. chi2 .. " with 5 degrees of freedom")
end)

test("bernoulli(p) is true with frequency p", function()
    local r = random.stream(8)
    local hits = 0
    for _ = 1, 10000 do if r:bernoulli(0.3) then hits = hits + 1 end end
    A.near(hits / 10000, 0.3, 0.02)
    A.eq(r:bernoulli(0), false)
    A.eq(r:bernoulli(1), true)
end)

test("normal(mean, std): sample mean and variance", function()
    local r = random.stream(11, 2)
    local m, v = moments(draws(20000, function() return r:normal(2, 3) end))
    A.truthy(math.abs(m - 2) < 0.1, "mean " .. m)  -- standard error 0.021
    A.truthy(math.abs(v / 9 - 1) < 0.05, "variance " .. v)
    local m0, v0 = moments(draws(20000, function() return r:normal() end))
    A.truthy(math.abs(m0) < 0.04 and math.abs(v0 - 1) < 0.05, m0 .. ", " .. v0)
end)

test("gamma(k): mean k and variance k, for k above and below 1", function()
    local r = random.stream(13, 1)
    for _, k in ipairs({ 3.0, 0.5 }) do
        local xs = draws(20000, function() return r:gamma(k) end)
        for _, x in ipairs(xs) do A.truthy(x >= 0, "negative gamma draw " .. x) end
        local m, v = moments(xs)
        -- Standard errors: mean sqrt(k/n) (0.012 and 0.005).
        A.truthy(math.abs(m - k) < 0.06 * k, "gamma(" .. k .. ") mean " .. m)
        A.truthy(math.abs(v / k - 1) < 0.1, "gamma(" .. k .. ") variance " .. v)
    end
    A.raises(function() r:gamma(0) end, "shape must be positive")
    A.raises(function() r:gamma(-1) end, "shape must be positive")
end)

test("beta(2, 5): mean 2/7 within 0.01, variance 10/392 within 10%", function()
    local r = random.stream(17, 3)
    local xs = draws(20000, function() return r:beta(2, 5) end)
    for _, x in ipairs(xs) do A.truthy(x >= 0 and x <= 1, "beta draw " .. x) end
    local m, v = moments(xs)
    A.truthy(math.abs(m - 2 / 7) < 0.01, "mean " .. m)
    A.truthy(math.abs(v / (10 / 392) - 1) < 0.1, "variance " .. v)
end)

test("beta with tiny parameters piles up at 0 and 1 and is never NaN", function()
    local r = random.stream(19, 5)
    local n, ends, s = 4000, 0, 0
    for _ = 1, n do
        local x = r:beta(0.001, 0.001)
        A.truthy(x == x and x >= 0 and x <= 1, "beta(0.001, 0.001) gave " .. tostring(x))
        if x < 0.01 or x > 0.99 then ends = ends + 1 end
        s = s + x
    end
    -- P(0.01 < X < 0.99) is about 0.005 here (0.02 for beta(1, 1)).
    A.truthy(ends / n > 0.98, "only " .. ends .. " of " .. n .. " draws near 0 or 1")
    A.truthy(math.abs(s / n - 0.5) < 0.05, "mean " .. s / n .. " (symmetric: 0.5)")
    -- Asymmetric small parameters: mean a / (a + b).
    local m = moments(draws(20000, function() return r:beta(0.2, 0.6) end))
    A.truthy(math.abs(m - 0.25) < 0.015, "beta(0.2, 0.6) mean " .. m)
end)

test("permutation(n) is a permutation, uniform in its first position", function()
    local r = random.stream(23)
    local p = r:permutation(50)
    A.eq(#p, 50)
    local seen = {}
    for _, v in ipairs(p) do
        A.truthy(math.type(v) == "integer" and v >= 1 and v <= 50 and not seen[v], "bad entry " .. v)
        seen[v] = true
    end
    local identity = true
    for i = 1, 50 do if p[i] ~= i then identity = false end end
    A.truthy(not identity, "a shuffle of 50 must move something")
    A.eq(random.stream(23):permutation(50), p)
    local q, moved = random.stream(24):permutation(50), 0
    for i = 1, 50 do if q[i] ~= p[i] then moved = moved + 1 end end
    A.truthy(moved > 25, "another seed must give another order (" .. moved .. " positions differ)")
    A.eq(r:permutation(0), {})
    A.eq(r:permutation(1), { 1 })
    local first = { 0, 0, 0, 0 }
    for _ = 1, 8000 do
        local q = r:permutation(4)
        first[q[1]] = first[q[1]] + 1
    end
    for v = 1, 4 do
        A.truthy(math.abs(first[v] - 2000) < 200, "value " .. v .. " first " .. first[v] .. " times")
    end
end)

test("bad seeds and ids are errors that say which", function()
    A.raises(function() random.stream(1.5) end, "seed must be an integer", "1.5")
    A.raises(function() random.stream("7") end, "seed must be an integer")
    A.raises(function() random.stream(1, 2, 0.5) end, "id 2 must be an integer", "0.5")
end)

test("draw_seed gives non-negative 31-bit integers that vary", function()
    local seen, distinct = {}, 0
    for _ = 1, 5 do
        local s = random.draw_seed()
        A.truthy(math.type(s) == "integer" and s >= 0 and s < 2 ^ 31, tostring(s))
        if not seen[s] then distinct = distinct + 1 end
        seen[s] = true
        local t0 = mt.clock()
        while mt.clock() - t0 < 1e-4 do end
    end
    A.truthy(distinct >= 2, "draw_seed returned the same value 5 times")
end)

return T
