-- Elementwise math, broadcasting, operators, reductions and matmul, each
-- checked against plain-Lua loops from ref.lua.

local mt = require "machrt"
local A = require "assert"
local R = require "ref"

local T = {}
local function test(name, fn) T[#T + 1] = { name, fn } end

-- float32 results of transcendental functions: a few ulps of slack.
local TOL = 1e-5

-- Unary ------------------------------------------------------------------------------

local unary = {
    { "exp", math.exp, "values" },
    { "log", math.log, "positive" },
    { "sigmoid", R.sigmoid, "values" },
    { "relu", function(v) return math.max(v, 0) end, "values" },
    { "abs", math.abs, "values" },
    { "sqrt", math.sqrt, "positive" },
    { "tanh", R.tanh, "values" },
    { "neg", function(v) return -v end, "values" },
}

for _, u in ipairs(unary) do
    local name, f, domain = u[1], u[2], u[3]

    test(name .. " out of place", function()
        local data = R[domain]({ 3, 4 })
        local x = mt.tensor(data)
        local y = x[name](x)
        A.tensor_near(y, R.map(data, f), TOL)
        A.tensor_near(x, data, 0, name .. " modified its input")
        -- On a non-contiguous view: logical order must be respected.
        local t = x:transpose(1, 2)
        A.tensor_near(t[name](t), R.map(R.transpose(data, 1, 2), f), TOL)
    end)

    test(name .. "_ in place returns self", function()
        local data = R[domain]({ 2, 5 })
        local x = mt.tensor(data)
        local r = x[name .. "_"](x)
        A.truthy(rawequal(r, x), name .. "_ did not return self")
        A.tensor_near(x, R.map(data, f), TOL)
    end)
end

test("unary edge values", function()
    A.tensor_near(mt.tensor({ -1000, 0, 1000 }):sigmoid(), { 0, 0.5, 1 }, 1e-6)
    A.tensor_near(mt.tensor({ -1000, 0, 1000 }):tanh(), { -1, 0, 1 }, 1e-6)
    A.tensor_near(mt.tensor({ 0, -0.5, 0.5 }):relu(), { 0, 0, 0.5 }, 0)
    A.tensor_near(mt.tensor({ 0 }):exp(), { 1 }, 0)
    A.tensor_near(mt.tensor({ 1 }):log(), { 0 }, 0)
    A.eq(mt.tensor({ 0 }):log():get(1), -math.huge)
    local nan = mt.tensor({ -1 }):sqrt():get(1)
    A.truthy(nan ~= nan, "sqrt(-1) should be NaN, got " .. tostring(nan))
end)

-- Binary -------------------------------------------------------------------------

local binary = {
    { "add", function(a, b) return a + b end },
    { "sub", function(a, b) return a - b end },
    { "mul", function(a, b) return a * b end },
    { "div", function(a, b) return a / b end },
    { "pow", function(a, b) return a ^ b end },
    { "maximum", math.max },
    { "minimum", math.min },
}

-- Shape pairs that broadcast (numpy rules), including 0-d and both sides
-- being stretched at once.
local shape_pairs = {
    { { 2, 3 }, { 2, 3 } },
    { { 2, 3 }, { 3 } },
    { { 3 }, { 2, 3 } },
    { { 2, 3 }, { 2, 1 } },
    { { 2, 1 }, { 1, 3 } },
    { { 3 }, { 2, 1 } },
    { { 2, 1, 4 }, { 3, 1 } },
    { { 4, 1, 3, 1 }, { 2, 1, 5 } },
    { { 2, 3 }, {} },
    { {}, { 2, 3 } },
    { { 1 }, { 3, 2 } },
}

local function shape_str(s) return "{" .. table.concat(s, ",") .. "}" end

for _, b in ipairs(binary) do
    local name, f = b[1], b[2]

    test(name .. " with broadcasting", function()
        for _, pair in ipairs(shape_pairs) do
            -- pow needs a positive base; a small exponent keeps values modest.
            local ad = (name == "pow") and R.positive(pair[1], 1) or R.values(pair[1], 1)
            local bd = (name == "div") and R.positive(pair[2], 2) or R.values(pair[2], 2)
            if name == "pow" then bd = R.map(bd, function(v) return v / 2 end) end
            local x, y = mt.tensor(ad), mt.tensor(bd)
            local got = x[name](x, y)
            A.tensor_near(got, R.binary(ad, bd, f), TOL,
                name .. " " .. shape_str(pair[1]) .. " with " .. shape_str(pair[2]))
            A.tensor_near(x, ad, 0, name .. " modified its input")
        end
    end)

    test(name .. " with a number", function()
        local ad = (name == "pow") and R.positive({ 2, 3 }) or R.values({ 2, 3 })
        local x = mt.tensor(ad)
        A.tensor_near(x[name](x, 2.5), R.map(ad, function(v) return f(v, 2.5) end), TOL)
        A.tensor_near(x[name](x, -1), R.map(ad, function(v) return f(v, -1) end), TOL)
    end)

    test(name .. "_ in place with broadcasting returns self", function()
        local ad = (name == "pow") and R.positive({ 3, 4 }) or R.values({ 3, 4 })
        local bd = (name == "div") and R.positive({ 4 }, 3) or R.values({ 4 }, 3)
        if name == "pow" then bd = R.map(bd, function(v) return v / 2 end) end
        local x = mt.tensor(ad)
        local r = x[name .. "_"](x, mt.tensor(bd))
        A.truthy(rawequal(r, x), name .. "_ did not return self")
        A.tensor_near(x, R.binary(ad, bd, f), TOL)
        local y = mt.tensor(ad)
        A.truthy(rawequal(y[name .. "_"](y, 3), y), name .. "_ with a number did not return self")
        A.tensor_near(y, R.map(ad, function(v) return f(v, 3) end), TOL)
    end)
end

test("pow with common exponents", function()
    local d = R.positive({ 5 })
    local x = mt.tensor(d)
    A.tensor_near(x:pow(2), R.map(d, function(v) return v * v end), TOL)
    A.tensor_near(x:pow(0.5), R.map(d, math.sqrt), TOL)
    A.tensor_near(x:pow(0), { 1, 1, 1, 1, 1 }, 0)
    A.tensor_near(mt.tensor({ -2, 3 }):pow(3), { -8, 27 }, 0)
end)

test("in-place op with itself as the operand", function()
    local x = mt.tensor({ 1, 2, 3 })
    x:add_(x)
    A.tensor_near(x, { 2, 4, 6 }, 0)
    x:mul_(x)
    A.tensor_near(x, { 4, 16, 36 }, 0)
end)

test("binary ops on non-contiguous operands", function()
    local ad, bd = R.values({ 4, 3 }), R.values({ 3, 4 }, 5)
    local x = mt.tensor(ad)
    local y = mt.tensor(bd):transpose(1, 2)        -- 4x3, strided
    A.tensor_near(x:add(y), R.binary(ad, R.transpose(bd, 1, 2), function(a, b) return a + b end), 0)
    local col = mt.tensor(bd):narrow(2, 2, 1)      -- 3x1, strided
    A.tensor_near(x:mul(col:transpose(1, 2)),
        R.binary(ad, R.transpose(R.gen({ 3, 1 }, function(i) return bd[i[1]][2] end), 1, 2),
            function(a, b) return a * b end), 0)
end)

-- Operators ------------------------------------------------------------------------

test("arithmetic operators between tensors broadcast", function()
    local ad, bd = R.values({ 2, 3 }), R.positive({ 3 })
    local x, y = mt.tensor(ad), mt.tensor(bd)
    A.tensor_near(x + y, R.binary(ad, bd, function(a, b) return a + b end), 0)
    A.tensor_near(x - y, R.binary(ad, bd, function(a, b) return a - b end), 0)
    A.tensor_near(y - x, R.binary(bd, ad, function(a, b) return a - b end), 0)
    A.tensor_near(x * y, R.binary(ad, bd, function(a, b) return a * b end), 0)
    A.tensor_near(x / y, R.binary(ad, bd, function(a, b) return a / b end), TOL)
    local c = mt.tensor({ { 1 }, { 2 } })
    A.tensor_near(c + y, R.binary({ { 1 }, { 2 } }, bd, function(a, b) return a + b end), 0)
end)

test("arithmetic operators with numbers on either side", function()
    local d = R.positive({ 2, 2 })
    local x = mt.tensor(d)
    A.tensor_near(x + 1, R.map(d, function(v) return v + 1 end), 0)
    A.tensor_near(1 + x, R.map(d, function(v) return 1 + v end), 0)
    A.tensor_near(x - 1, R.map(d, function(v) return v - 1 end), 0)
    A.tensor_near(1 - x, R.map(d, function(v) return 1 - v end), 0)
    A.tensor_near(x * 3, R.map(d, function(v) return v * 3 end), 0)
    A.tensor_near(3 * x, R.map(d, function(v) return 3 * v end), 0)
    A.tensor_near(x / 4, R.map(d, function(v) return v / 4 end), 0)
    A.tensor_near(2 / x, R.map(d, function(v) return 2 / v end), TOL)
    A.tensor_near(-x, R.map(d, function(v) return -v end), 0)
    A.tensor_near(x * 0.5 + 2 * x - 1, R.map(d, function(v) return v * 0.5 + 2 * v - 1 end), 0)
    A.tensor_near(x, d, 0, "operators modified their operand")
end)

-- Reductions -------------------------------------------------------------------------

local reducers = {
    { "sum", R.sum },
    { "mean", R.mean },
    { "max", R.max },
    { "min", R.min },
}

test("reductions without dim return Lua numbers", function()
    local d = R.values({ 3, 4, 5 })
    local flat = R.flatten(d)
    local x = mt.tensor(d)
    for _, r in ipairs(reducers) do
        local v = x[r[1]](x)
        A.eq(type(v), "number", r[1] .. "() did not return a number")
        A.near(v, r[2](flat), TOL, r[1])
    end
end)

test("argmax and argmin without dim give 1-based flat indices", function()
    local d = R.values({ 3, 4 })
    local flat = R.flatten(d)
    local x = mt.tensor(d)
    local am = x:argmax()
    A.eq(math.type(am), "integer", "argmax() must be a Lua integer")
    A.eq(am, R.argmax(flat))
    A.eq(x:argmin(), R.argmin(flat))
    A.eq(math.type(x:argmin()), "integer")
    A.eq(mt.tensor({ 5, 1, 9, 3 }):argmax(), 3)
    A.eq(mt.tensor({ 5, 1, 9, 3 }):argmin(), 2)
end)

test("argmax without dim of a view counts in logical order", function()
    local d = R.values({ 3, 4 })
    local td = R.transpose(d, 1, 2)
    local t = mt.tensor(d):transpose(1, 2)
    A.eq(t:argmax(), R.argmax(R.flatten(td)))
    A.eq(t:argmin(), R.argmin(R.flatten(td)))
end)

test("reductions along each dim remove that dim", function()
    local d = R.values({ 3, 4, 5 })
    local x = mt.tensor(d)
    for dim = 1, 3 do
        for _, r in ipairs(reducers) do
            local name = r[1]
            local got = x[name](x, dim)
            A.truthy(mt.is_tensor(got), name .. "(" .. dim .. ") did not return a tensor")
            A.eq(got:dtype(), "float32")
            A.tensor_near(got, R.along(d, dim, r[2]), TOL, name .. "(" .. dim .. ")")
        end
    end
end)

test("max and min along a dim also return 1-based int64 indices", function()
    local d = R.values({ 3, 4, 5 })
    local x = mt.tensor(d)
    for dim = 1, 3 do
        local v, i = x:max(dim)
        A.tensor_near(v, R.along(d, dim, R.max), 0, "max values (" .. dim .. ")")
        A.truthy(mt.is_tensor(i), "max(" .. dim .. ") returned no index tensor")
        A.eq(i:dtype(), "int64")
        A.eq(i:totable(), R.along(d, dim, R.argmax), "max indices (" .. dim .. ")")
        local v2, i2 = x:min(dim)
        A.tensor_near(v2, R.along(d, dim, R.min), 0, "min values (" .. dim .. ")")
        A.eq(i2:dtype(), "int64")
        A.eq(i2:totable(), R.along(d, dim, R.argmin), "min indices (" .. dim .. ")")
    end
end)

test("argmax and argmin along a dim", function()
    local d = R.values({ 4, 6 })
    local x = mt.tensor(d)
    for dim = 1, 2 do
        local am = x:argmax(dim)
        A.eq(am:dtype(), "int64")
        A.eq(am:totable(), R.along(d, dim, R.argmax), "argmax(" .. dim .. ")")
        local an = x:argmin(dim)
        A.eq(an:dtype(), "int64")
        A.eq(an:totable(), R.along(d, dim, R.argmin), "argmin(" .. dim .. ")")
    end
    A.eq(mt.tensor({ { 1, 9, 3 }, { 8, 2, 7 } }):argmax(2):totable(), { 2, 1 })
end)

test("argmax and max resolve ties to the first occurrence", function()
    -- As PyTorch and numpy document: the first maximal (minimal) value wins.
    local x = mt.tensor({ { 1, 5, 5, 0 }, { 2, 2, -1, -1 } })
    A.eq(x:argmax(), 2)
    A.eq(x:argmin(), 7)
    A.eq(x:argmax(2):totable(), { 2, 1 })
    A.eq(x:argmin(2):totable(), { 4, 3 })
    local _, i = x:max(2)
    A.eq(i:totable(), { 2, 1 })
    local _, j = mt.tensor({ { 3, 3 }, { 3, 3 } }):min(1)
    A.eq(j:totable(), { 1, 1 })
end)

test("reductions of non-contiguous views", function()
    local d = R.values({ 5, 6 })
    local x = mt.tensor(d)
    local t = x:transpose(1, 2):narrow(2, 2, 3)     -- 6x3 strided
    local td = R.gen({ 6, 3 }, function(i) return d[i[2] + 1][i[1]] end)
    A.near(t:sum(), R.sum(R.flatten(td)), TOL)
    A.near(t:mean(), R.mean(R.flatten(td)), TOL)
    A.eq(t:max(), R.max(R.flatten(td)))
    for dim = 1, 2 do
        A.tensor_near(t:sum(dim), R.along(td, dim, R.sum), TOL)
        A.tensor_near(t:mean(dim), R.along(td, dim, R.mean), TOL)
        A.eq(t:argmax(dim):totable(), R.along(td, dim, R.argmax))
    end
    local e = mt.tensor({ { 1 }, { 2 } }):expand({ 2, 3 })
    A.tensor_near(e:sum(2), { 3, 6 }, 0)
end)

test("reducing a 1-d tensor along dim 1 gives a 0-d tensor", function()
    local s = mt.tensor({ 1, 2, 3 }):sum(1)
    A.eq(s:dim(), 0)
    A.eq(s:item(), 6)
    local v, i = mt.tensor({ 4, 9, 2 }):max(1)
    A.eq(v:item(), 9)
    A.eq(i:item(), 2)
end)

test("sum of many elements is accurate", function()
    -- 2^25 ones: a naive float32 running sum stalls at 2^24 (adding 1 no
    -- longer changes it); the exact answer needs a better accumulator.
    A.eq(mt.ones(4096, 8192):sum(), 33554432)
    A.eq(mt.ones(4096, 8192):mean(), 1)
    A.near(mt.full({ 1000000 }, 0.1):mean(), R.f32(0.1), 1e-6)
    A.near(mt.full({ 1000, 1000 }, 0.1):sum(2):get(1), 100, 1e-5)
end)

-- matmul -----------------------------------------------------------------------------

local function check_matmul(sa, sb, label)
    local ad, bd = R.values(sa, 3), R.values(sb, 7)
    local got = mt.tensor(ad):matmul(mt.tensor(bd))
    A.tensor_near(got, R.matmul(ad, bd), 1e-5, label)
end

test("matmul 2-d on odd sizes", function()
    check_matmul({ 3, 5 }, { 5, 7 }, "3x5 @ 5x7")
    check_matmul({ 1, 1 }, { 1, 1 }, "1x1 @ 1x1")
    check_matmul({ 7, 1 }, { 1, 3 }, "7x1 @ 1x3 (outer product)")
    check_matmul({ 1, 9 }, { 9, 1 }, "1x9 @ 9x1")
end)

test("matmul of a larger matrix", function()
    -- Big enough for a blocked/threaded kernel; values kept small so float32
    -- rounding stays far below the tolerance.
    local ad = R.gen({ 33, 65 }, function(_, k) return ((k * 13) % 17 - 8) / 8 end)
    local bd = R.gen({ 65, 31 }, function(_, k) return ((k * 7) % 11 - 5) / 4 end)
    A.tensor_near(mt.tensor(ad):matmul(mt.tensor(bd)), R.matmul(ad, bd), 1e-5)
end)

test("matmul batched", function()
    check_matmul({ 2, 3, 4 }, { 2, 4, 5 }, "2x3x4 @ 2x4x5")
    check_matmul({ 2, 2, 3, 2 }, { 2, 2, 2, 3 }, "2x2x3x2 @ 2x2x2x3")
end)

test("matmul broadcasts batch dims", function()
    check_matmul({ 3, 4 }, { 2, 4, 5 }, "3x4 @ 2x4x5")
    check_matmul({ 2, 3, 4 }, { 4, 5 }, "2x3x4 @ 4x5")
    check_matmul({ 2, 1, 3, 4 }, { 5, 4, 2 }, "2x1x3x4 @ 5x4x2")
    check_matmul({ 1, 3, 4 }, { 3, 4, 2 }, "1x3x4 @ 3x4x2")
end)

test("matmul with 1-d operands (numpy rules)", function()
    local v = R.values({ 4 })
    local m = R.values({ 4, 3 }, 2)
    local got = mt.tensor(v):matmul(mt.tensor(m))
    A.eq(got:shape(), { 3 })
    A.tensor_near(got, R.matmul(v, m), 1e-5, "4 @ 4x3")
    local n = R.values({ 3, 4 }, 4)
    got = mt.tensor(n):matmul(mt.tensor(v))
    A.eq(got:shape(), { 3 })
    A.tensor_near(got, R.matmul(n, v), 1e-5, "3x4 @ 4")
    local dot = mt.tensor(v):matmul(mt.tensor(R.values({ 4 }, 9)))
    A.eq(dot:dim(), 0, "vector @ vector is 0-d")
    A.near(dot:item(), R.matmul(v, R.values({ 4 }, 9)), 1e-5)
    check_matmul({ 2, 3, 4 }, { 4 }, "2x3x4 @ 4")
    check_matmul({ 4 }, { 2, 4, 3 }, "4 @ 2x4x3")
end)

test("matmul of non-contiguous operands", function()
    local ad, bd = R.values({ 5, 3 }), R.values({ 7, 5 }, 1)
    local a = mt.tensor(ad):transpose(1, 2)        -- 3x5
    local b = mt.tensor(bd):transpose(1, 2)        -- 5x7
    A.tensor_near(a:matmul(b), R.matmul(R.transpose(ad, 1, 2), R.transpose(bd, 1, 2)), 1e-5)
    local cd = R.values({ 4, 6 }, 2)
    local c = mt.tensor(cd):narrow(2, 2, 4)        -- 4x4 with row stride 6
    local cref = R.gen({ 4, 4 }, function(i) return cd[i[1]][i[2] + 1] end)
    A.tensor_near(c:matmul(c), R.matmul(cref, cref), 1e-5)
    local e = mt.tensor({ { 1, 2 } }):expand({ 3, 2 })
    A.tensor_near(e:matmul(mt.tensor({ { 1 }, { 1 } })), { { 3 }, { 3 }, { 3 } }, 0)
end)

test("matmul leaves its operands unchanged", function()
    local ad, bd = R.values({ 3, 5 }), R.values({ 5, 2 }, 1)
    local a, b = mt.tensor(ad), mt.tensor(bd)
    a:matmul(b)
    A.tensor_near(a, ad, 0)
    A.tensor_near(b, bd, 0)
end)

return T
