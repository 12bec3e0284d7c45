-- Views (reshape, transpose, permute, narrow, select, expand) and the data
-- movement methods (contiguous, clone, copy, fill). The key property: a view
-- shares its base's storage, so a write through one is seen through the other.

local mt = require "machrt"
local A = require "assert"
local R = require "ref"

local T = {}
local function test(name, fn) T[#T + 1] = { name, fn } end

-- reshape ------------------------------------------------------------------------

test("reshape keeps row-major order", function()
    local data = R.values({ 2, 3, 4 })
    local x = mt.tensor(data)
    local flat = R.flatten(data)
    A.tensor_near(x:reshape({ 24 }), flat, 0)
    A.tensor_near(x:reshape({ 4, 6 }), R.nest(flat, { 4, 6 }), 0)
    A.tensor_near(x:reshape({ 2, 2, 2, 3 }), R.nest(flat, { 2, 2, 2, 3 }), 0)
    A.eq(x:shape(), { 2, 3, 4 }, "reshape changed its source's shape")
end)

test("reshape infers one -1 dimension", function()
    local x = mt.arange(12)
    A.eq(x:reshape({ 3, -1 }):shape(), { 3, 4 })
    A.eq(x:reshape({ -1, 6 }):shape(), { 2, 6 })
    A.eq(x:reshape({ 2, -1, 3 }):shape(), { 2, 2, 3 })
    A.eq(x:reshape({ -1 }):shape(), { 12 })
end)

test("reshape of a one-element tensor to 0-d and back", function()
    local s = mt.tensor({ { 5 } }):reshape({})
    A.eq(s:dim(), 0)
    A.eq(s:item(), 5)
    A.eq(mt.tensor(5):reshape({ 1, 1, 1 }):shape(), { 1, 1, 1 })
end)

test("reshape of a contiguous tensor is a view", function()
    local x = mt.zeros(3, 4)
    local r = x:reshape({ 12 })
    r:set(9, 7)             -- flat position 7 = row 2, column 3
    A.eq(x:get(2, 3), 9)
    x:set(4, 3, 4)
    A.eq(r:get(12), 4)
end)

test("reshape of a non-contiguous tensor copies in logical order", function()
    local data = R.values({ 3, 4 })
    local x = mt.tensor(data)
    local t = x:transpose(1, 2)
    local r = t:reshape({ 12 })
    A.tensor_near(r, R.flatten(R.transpose(data, 1, 2)), 0)
    r:set(100, 1)
    A.eq(x:get(1, 1), data[1][1], "reshape of a non-contiguous view must be a copy")
end)

-- transpose and permute ----------------------------------------------------------

test("transpose swaps dims and shares storage", function()
    local data = R.values({ 3, 5 })
    local x = mt.tensor(data)
    local t = x:transpose(1, 2)
    A.eq(t:shape(), { 5, 3 })
    A.eq(t:stride(), { 1, 5 })
    A.eq(t:is_contiguous(), false)
    A.tensor_near(t, R.transpose(data, 1, 2), 0)
    t:set(42, 4, 2)
    A.eq(x:get(2, 4), 42)
    x:set(-7, 3, 1)
    A.eq(t:get(1, 3), -7)
    -- transpose(2, 1) is the same view as transpose(1, 2).
    data[2][4], data[3][1] = 42, -7
    A.tensor_near(x:transpose(2, 1), R.transpose(data, 1, 2), 0)
end)

test("transpose of non-adjacent dims of a 3-d tensor", function()
    local data = R.values({ 2, 3, 4 })
    local t = mt.tensor(data):transpose(1, 3)
    A.eq(t:shape(), { 4, 3, 2 })
    A.tensor_near(t, R.transpose(data, 1, 3), 0)
    A.eq(mt.tensor(data):transpose(2, 2):is_contiguous(), true)
end)

test("permute reorders dims and shares storage", function()
    local data = R.values({ 2, 3, 4 })
    local x = mt.tensor(data)
    local p = x:permute({ 3, 1, 2 })
    A.eq(p:shape(), { 4, 2, 3 })
    A.eq(p:stride(), { 1, 12, 4 })
    A.tensor_near(p, R.permute(data, { 3, 1, 2 }), 0)
    p:set(99, 4, 2, 1)         -- = x[2][1][4]
    A.eq(x:get(2, 1, 4), 99)
    local changed = R.map(data, function(v) return v end)   -- a deep copy
    changed[2][1][4] = 99
    A.tensor_near(x:permute({ 2, 3, 1 }), R.permute(changed, { 2, 3, 1 }), 0)
    A.eq(x:permute({ 1, 2, 3 }):is_contiguous(), true)
end)

test("permute of a 4-d tensor", function()
    local data = R.values({ 2, 3, 2, 4 })
    local p = mt.tensor(data):permute({ 4, 2, 1, 3 })
    A.eq(p:shape(), { 4, 3, 2, 2 })
    A.tensor_near(p, R.permute(data, { 4, 2, 1, 3 }), 0)
end)

-- narrow and select ----------------------------------------------------------------

test("narrow takes a slice and shares storage", function()
    local data = R.values({ 3, 5 })
    local x = mt.tensor(data)
    local n = x:narrow(2, 2, 3)
    A.eq(n:shape(), { 3, 3 })
    A.eq(n:stride(), { 5, 1 })
    A.eq(n:is_contiguous(), false)
    A.tensor_near(n, R.gen({ 3, 3 }, function(i) return data[i[1]][i[2] + 1] end), 0)
    n:set(50, 3, 3)
    A.eq(x:get(3, 4), 50)
    local rows = x:narrow(1, 2, 2)
    A.eq(rows:is_contiguous(), true, "narrowing the outer dim keeps rows contiguous")
    A.eq(rows:get(1, 1), data[2][1])
    A.eq(x:narrow(2, 5, 1):shape(), { 3, 1 })
    A.eq(x:narrow(1, 1, 3):shape(), { 3, 5 })
end)

test("select removes the dimension and shares storage", function()
    local data = R.values({ 3, 4 })
    local x = mt.tensor(data)
    local row = x:select(1, 2)
    A.eq(row:shape(), { 4 })
    A.tensor_near(row, data[2], 0)
    local col = x:select(2, 3)
    A.eq(col:shape(), { 3 })
    A.eq(col:stride(), { 4 })
    A.tensor_near(col, { data[1][3], data[2][3], data[3][3] }, 0)
    col:set(77, 1)
    A.eq(x:get(1, 3), 77)
    row:fill(0)
    A.tensor_near(x:select(1, 2), { 0, 0, 0, 0 }, 0)
end)

test("select on a 1-d tensor gives a 0-d view", function()
    local x = mt.tensor({ 1, 2, 3 })
    local s = x:select(1, 2)
    A.eq(s:dim(), 0)
    A.eq(s:item(), 2)
    s:fill(20)
    A.eq(x:get(2), 20)
end)

test("chained views index the right elements", function()
    local data = R.values({ 4, 5, 3 })
    local x = mt.tensor(data)
    -- transpose(1, 3) -> 3x5x4; narrow dim 2 to 2..4 -> 3x3x4; select dim 3 = 2 -> 3x3
    local v = x:transpose(1, 3):narrow(2, 2, 3):select(3, 2)
    A.eq(v:shape(), { 3, 3 })
    local want = R.gen({ 3, 3 }, function(i) return data[2][i[2] + 1][i[1]] end)
    A.tensor_near(v, want, 0)
    v:set(123, 3, 1)             -- = x[2][2][3]
    A.eq(x:get(2, 2, 3), 123)
end)

-- expand ---------------------------------------------------------------------------

test("expand broadcasts size-1 dims with stride 0", function()
    local x = mt.tensor({ { 1 }, { 2 }, { 3 } })
    local e = x:expand({ 3, 4 })
    A.eq(e:shape(), { 3, 4 })
    A.eq(e:stride()[2], 0)
    A.eq(e:is_contiguous(), false)
    A.tensor_near(e, { { 1, 1, 1, 1 }, { 2, 2, 2, 2 }, { 3, 3, 3, 3 } }, 0)
    x:set(9, 2, 1)
    A.tensor_near(e:select(1, 2), { 9, 9, 9, 9 }, 0, "expand is a view of its base")
    local r = mt.tensor({ { 1, 2 } }):expand({ 3, 2 })
    A.tensor_near(r, { { 1, 2 }, { 1, 2 }, { 1, 2 } }, 0)
end)

test("expand adds leading dims", function()
    local e = mt.tensor({ 1, 2, 3 }):expand({ 2, 3 })
    A.eq(e:shape(), { 2, 3 })
    A.tensor_near(e, { { 1, 2, 3 }, { 1, 2, 3 } }, 0)
end)

test("an expanded view is read correctly by ops", function()
    local e = mt.tensor({ { 1 }, { 2 } }):expand({ 2, 3 })
    A.eq(e:sum(), 9)
    A.tensor_near(e:contiguous(), { { 1, 1, 1 }, { 2, 2, 2 } }, 0)
    A.tensor_near(e:clone(), { { 1, 1, 1 }, { 2, 2, 2 } }, 0)
    A.tensor_near(e + 1, { { 2, 2, 2 }, { 3, 3, 3 } }, 0)
end)

-- contiguous, clone, copy, fill ------------------------------------------------------

test("contiguous makes a dense row-major tensor", function()
    local data = R.values({ 3, 4 })
    local t = mt.tensor(data):transpose(1, 2)
    local c = t:contiguous()
    A.eq(c:is_contiguous(), true)
    A.eq(c:stride(), { 3, 1 })
    A.tensor_near(c, R.transpose(data, 1, 2), 0)
    local n = mt.tensor(data):narrow(2, 2, 2):contiguous()
    A.eq(n:stride(), { 2, 1 })
    A.tensor_near(n, R.gen({ 3, 2 }, function(i) return data[i[1]][i[2] + 1] end), 0)
end)

test("clone is an independent contiguous copy", function()
    local data = R.values({ 2, 3 })
    local x = mt.tensor(data)
    local c = x:clone()
    A.tensor_near(c, data, 0)
    c:set(100, 1, 1)
    A.eq(x:get(1, 1), data[1][1], "writing the clone changed the source")
    x:set(200, 2, 2)
    A.eq(c:get(2, 2), data[2][2], "writing the source changed the clone")
    local tc = x:transpose(1, 2):clone()
    A.eq(tc:is_contiguous(), true)
    A.eq(tc:shape(), { 3, 2 })
    local li = mt.tensor({ 1, 2 }, "int64"):clone()
    A.eq(li:dtype(), "int64")
    A.eq(li:totable(), { 1, 2 })
end)

test("copy fills self from a same-shaped source and returns self", function()
    local x = mt.zeros(2, 3)
    local src = mt.tensor(R.values({ 2, 3 }))
    local r = x:copy(src)
    A.truthy(rawequal(r, x), "copy did not return self")
    A.tensor_near(x, R.values({ 2, 3 }), 0)
    src:set(50, 1, 1)
    A.eq(x:get(1, 1), R.values({ 2, 3 })[1][1], "copy must not alias its source")
end)

test("copy broadcasts the source", function()
    local x = mt.zeros(2, 3)
    x:copy(mt.tensor({ 1, 2, 3 }))
    A.tensor_near(x, { { 1, 2, 3 }, { 1, 2, 3 } }, 0)
    x:copy(mt.tensor({ { 7 }, { 8 } }))
    A.tensor_near(x, { { 7, 7, 7 }, { 8, 8, 8 } }, 0)
    x:copy(mt.tensor(4))
    A.tensor_near(x, { { 4, 4, 4 }, { 4, 4, 4 } }, 0)
end)

test("copy into views writes through to the base", function()
    local x = mt.zeros(3, 4)
    x:select(2, 1):copy(mt.tensor({ 1, 2, 3 }))
    x:narrow(1, 3, 1):copy(mt.tensor({ { 5, 6, 7, 8 } }))
    A.tensor_near(x, { { 1, 0, 0, 0 }, { 2, 0, 0, 0 }, { 5, 6, 7, 8 } }, 0)
    -- Non-contiguous source into non-contiguous destination.
    local y = mt.zeros(2, 3)
    y:transpose(1, 2):copy(mt.tensor({ { 1, 2, 3 }, { 4, 5, 6 } }):transpose(1, 2))
    A.tensor_near(y, { { 1, 2, 3 }, { 4, 5, 6 } }, 0)
end)

test("copy converts between float32 and int64", function()
    local l = mt.zeros({ 3 }, "int64")
    l:copy(mt.tensor({ 1, 2, 3 }))
    A.eq(l:dtype(), "int64")
    A.eq(l:totable(), { 1, 2, 3 })
    local f = mt.zeros(3)
    f:copy(mt.tensor({ 4, 5, 6 }, "int64"))
    A.eq(f:dtype(), "float32")
    A.tensor_near(f, { 4, 5, 6 }, 0)
end)

test("fill returns self and writes through views", function()
    local x = mt.zeros(3, 3)
    A.truthy(rawequal(x:fill(2), x), "fill did not return self")
    A.tensor_near(x, { { 2, 2, 2 }, { 2, 2, 2 }, { 2, 2, 2 } }, 0)
    x:narrow(2, 2, 2):fill(-1)
    A.tensor_near(x, { { 2, -1, -1 }, { 2, -1, -1 }, { 2, -1, -1 } }, 0)
    x:transpose(1, 2):select(1, 1):fill(5)     -- column 1
    A.tensor_near(x, { { 5, -1, -1 }, { 5, -1, -1 }, { 5, -1, -1 } }, 0)
    local l = mt.zeros({ 2 }, "int64"):fill(3)
    A.eq(l:totable(), { 3, 3 })
end)

test("in-place ops on views touch only the viewed elements", function()
    local data = R.values({ 3, 4 })
    local x = mt.tensor(data)
    x:narrow(1, 1, 2):mul_(2)
    x:select(2, 4):add_(100)
    local want = R.gen({ 3, 4 }, function(i)
        local v = data[i[1]][i[2]]
        if i[1] <= 2 then v = v * 2 end
        if i[2] == 4 then v = v + 100 end
        return v
    end)
    A.tensor_near(x, want, 0)
    -- Unary in place through a transposed view.
    local y = mt.tensor({ { -1, 2 }, { -3, 4 } })
    y:transpose(1, 2):abs_()
    A.tensor_near(y, { { 1, 2 }, { 3, 4 } }, 0)
    -- Broadcast in place into a transposed view.
    local z = mt.zeros(2, 3)
    z:transpose(1, 2):add_(mt.tensor({ 10, 20 }))
    A.tensor_near(z, { { 10, 10, 10 }, { 20, 20, 20 } }, 0)
end)

return T
