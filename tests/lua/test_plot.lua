-- machrt.plot (cairo pictures) and machrt.report (HTML index): files are
-- real PNGs of the requested size, pixels show what was drawn (a gradient
-- has many colours, vmin/vmax and origin move a cell's colour), writes are
-- atomic, bad input is a clear error. The last test renders the HTML page
-- with headless chromium when it is installed (skipped otherwise).

local mt = require "machrt"
local plot = require "machrt.plot"
local sys = require "machrt.sys"
local report = require "machrt.report"
local A = require "assert"

local F = require "files"

local T, test, tmpdir = F.suite()
local read, exists = F.read, F.exists

-- Checks the PNG signature and returns the IHDR width and height.
local function png_size(path)
    local s = read(path)
    A.eq(s:sub(1, 8), "\137PNG\r\n\26\n", path .. ": PNG signature")
    A.eq(s:sub(13, 16), "IHDR", path .. ": first chunk")
    local w, h = string.unpack(">I4I4", s, 17)
    return w, h
end

local function gradient(rows, cols)
    local g = mt.zeros{ rows, cols }
    for i = 1, rows do
        for j = 1, cols do g:set((i - 1) * cols + (j - 1), i, j) end
    end
    return g
end

-- Centre pixel of cell (row, col) of a heatmap's layout, row 1 at the top.
local function cell_centre(lay, rows, cols, row, col)
    local p = lay.plot
    return math.floor(p.x + (col - 0.5) * p.w / cols), math.floor(p.y + (row - 0.5) * p.h / rows)
end

test("heatmap writes a PNG of the requested size, atomically", function()
    local d = tmpdir()
    local path = d .. "/g.png"
    plot.heatmap(path, gradient(32, 64), { width = 520, height = 300, title = "gradient",
        xlabel = "time (s)", ylabel = "band", xrange = { 0, 10 } })
    A.eq({ png_size(path) }, { 520, 300 })
    A.eq(sys.list_folder(d), { "g.png" }, "no temporary file left")
    local info = plot.png_info(path)
    A.eq(info.width, 520)
    A.eq(info.height, 300)
    -- 2048 cells from dark to bright over ~440 x 220 pixels: many colours.
    A.truthy(info.colors > 200, "a gradient has many colours, got " .. info.colors)
    A.truthy(info.mean > 40 and info.mean < 250, "not blank, mean " .. info.mean)
end)

test("heatmap default size is 800 x 400", function()
    local path = tmpdir() .. "/d.png"
    plot.heatmap(path, gradient(4, 5))
    A.eq({ png_size(path) }, { 800, 400 })
end)

test("vmin/vmax and origin move a cell's colour", function()
    local d = tmpdir()
    local m = mt.tensor{ { 0, 1 }, { 2, 3 } }
    local lay = plot.heatmap(d .. "/a.png", m, { colorbar = false })
    A.eq(lay.vmin, 0)
    A.eq(lay.vmax, 3)
    local x, y = cell_centre(lay, 2, 2, 1, 1)
    local r, g, b = plot.png_pixel(d .. "/a.png", x, y)
    -- value 0 at vmin: viridis's dark violet (68, 1, 84)
    A.truthy(math.abs(r - 68) <= 2 and g <= 3 and math.abs(b - 84) <= 2,
        string.format("cell (1,1) at vmin is dark violet, got %d %d %d", r, g, b))
    -- the same value at vmax (vmin below it): viridis's yellow (253, 231, 37)
    lay = plot.heatmap(d .. "/b.png", m, { colorbar = false, vmin = -5, vmax = 0 })
    r, g, b = plot.png_pixel(d .. "/b.png", x, y)
    A.truthy(r > 240 and g > 220 and b < 60, string.format("cell (1,1) at vmax is yellow, got %d %d %d", r, g, b))
    -- origin = "lower": row 1 drawn at the bottom, so the top-left cell is (2, 1) = 2
    lay = plot.heatmap(d .. "/c.png", m, { colorbar = false, origin = "lower", colormap = "gray" })
    local rx, ry = cell_centre(lay, 2, 2, 1, 1)
    r, g, b = plot.png_pixel(d .. "/c.png", rx, ry)
    A.eq(r, g, "gray colormap")
    A.eq(g, b, "gray colormap")
    A.truthy(math.abs(r - math.floor(2 / 3 * 255 + 0.5)) <= 2, "top-left cell holds row 2's value 2, got " .. r)
    local bx, by = cell_centre(lay, 2, 2, 2, 1)
    A.eq(plot.png_pixel(d .. "/c.png", bx, by), 0, "bottom-left cell holds row 1's value 0 (black)")
end)

test("heatmap is NaN-safe and draws NaN cells gray", function()
    local d = tmpdir()
    local m = mt.tensor{ { 0 / 0, 1 }, { 2, 5 } }
    local lay = plot.heatmap(d .. "/n.png", m, { colorbar = true, annotate = true })
    A.eq(lay.vmin, 1)
    A.eq(lay.vmax, 5)
    local x, y = cell_centre(lay, 2, 2, 1, 1)
    local r, g, b = plot.png_pixel(d .. "/n.png", x + 3, y + 12)  -- off the "nan" text
    A.truthy(r == g and g == b and r > 180 and r < 230, string.format("NaN cell is light gray, got %d %d %d", r, g, b))
    -- all NaN: still a picture
    plot.heatmap(d .. "/all.png", mt.full({ 3, 3 }, 0 / 0))
    A.eq({ png_size(d .. "/all.png") }, { 800, 400 })
    -- a constant matrix
    plot.heatmap(d .. "/const.png", mt.full({ 3, 3 }, 7), { annotate = true, fmt = "%d" })
end)

test("confusion matrix: annotated cells, category ticks, non-contiguous input", function()
    local d = tmpdir()
    local cm = mt.tensor{ { 50, 2, 0, 1 }, { 3, 40, 5, 0 }, { 0, 4, 38, 7 }, { 1, 0, 9, 44 } }
    local names = { "fan", "pump", "slider", "valve" }
    local path = d .. "/cm.png"
    local lay = plot.heatmap(path, cm:transpose(1, 2), { title = "confusion", annotate = true, fmt = "%d",
        xticks = names, yticks = names, xlabel = "predicted", ylabel = "true", square = true })
    A.eq({ png_size(path) }, { 640, 560 })
    A.near(lay.plot.w, lay.plot.h, 1e-9, "square cells")
    local info = plot.png_info(path)
    A.truthy(info.colors > 30, "cells, text and ticks: many colours, got " .. info.colors)
    -- transposed view: cell (1, 2) holds cm[2][1] = 3, a dark colour
    local x, y = cell_centre(lay, 4, 4, 1, 2)
    local r, g = plot.png_pixel(path, x + 20, y + 20)
    A.truthy(r < 90 and g < 60, "cell (1, 2) of the transpose is dark")
    -- long labels turn; %.2f values
    plot.heatmap(d .. "/cm2.png", cm / 53, { annotate = true, fmt = "%.2f", xticks = {
        "a rather long class name", "b", "c", "d" }, yticks = names, width = 500, height = 500 })
end)

test("lines: size, legend, NaN points, log axis", function()
    local d = tmpdir()
    local e, a, b = {}, {}, {}
    for i = 1, 20 do e[i], a[i], b[i] = i, 1 / i, 1.2 / i + 0.1 end
    b[7] = 0 / 0
    local path = d .. "/l.png"
    local lay = plot.lines(path, { { name = "train", x = e, y = a }, { name = "val", x = e, y = b } },
        { title = "loss", xlabel = "epoch", ylabel = "BCE", width = 700, height = 350 })
    A.eq({ png_size(path) }, { 700, 350 })
    A.truthy(lay.plot.ylim[1] < 0.05 and lay.plot.ylim[2] > 1.3, "y limits cover the data")
    local info = plot.png_info(path)
    A.truthy(info.colors > 50 and info.mean > 200, "curves on white: " .. info.colors .. " colours")
    -- the first series' colour (tab10 blue) is drawn at its first point
    local p = lay.plot
    local function px(x) return p.x + (x - p.xlim[1]) / (p.xlim[2] - p.xlim[1]) * p.w end
    local function py(y) return p.y + p.h - (y - p.ylim[1]) / (p.ylim[2] - p.ylim[1]) * p.h end
    local r, g, bl = plot.png_pixel(path, math.floor(px(10)), math.floor(py(a[10])))
    A.truthy(math.abs(r - 0x1f) < 40 and math.abs(g - 0x77) < 40 and math.abs(bl - 0xb4) < 40,
        string.format("blue curve at epoch 10, got %d %d %d", r, g, bl))
    -- one series, no x (1..n), log axis with non-positive points skipped
    plot.lines(d .. "/lr.png", { { y = { 1e-3, 5e-4, 0, 1e-4, -1, 1e-5 } } }, { ylog = true })
    A.eq({ png_size(d .. "/lr.png") }, { 800, 400 })
    -- a single point, all-equal values
    plot.lines(d .. "/one.png", { { y = { 0.5 } } })
    plot.lines(d .. "/flat.png", { { y = { 2, 2, 2 } } }, { ylim = { 0, 4 } })
end)

test("grid: panels side by side", function()
    local d = tmpdir()
    local y = { 1, 0.5, 0.3, 0.2 }
    local lay = plot.grid(d .. "/g.png", {
        { series = { { name = "train", y = y }, { name = "val", y = { 1.1, 0.7, 0.5, 0.45 } } }, title = "loss" },
        { series = { { name = "F1", y = { 0.3, 0.6, 0.8, 0.9 } } }, title = "F1", ylabel = "F1" },
        { series = { { name = "lr", y = { 1e-3, 5e-4, 1e-4, 1e-5 } } }, title = "lr", ylog = true },
    }, { title = "run" })
    A.eq(#lay.panels, 3)
    local w, h = png_size(d .. "/g.png")
    A.eq(w, 3 * 420)
    A.truthy(h > 320, "title row above the panels")
    plot.grid(d .. "/g2.png", { { series = { { y = y } } }, { series = { { y = y } } } }, { cols = 1, width = 400, height = 500 })
    A.eq({ png_size(d .. "/g2.png") }, { 400, 500 })
end)

test("training_curves: loss, F1 and learning rate panels from a run history", function()
    local d = tmpdir()
    local history = {
        { epoch = 1, lr = 1e-3, train_loss = 0.6, val_loss = 0.7, val_f1 = 0.4 },
        { epoch = 2, lr = 5e-4, train_loss = 0.3 },                            -- not evaluated
        { epoch = 3, lr = 1e-4, train_loss = 0.2, val_loss = 0.25, val_f1 = 0.9 },
    }
    local lay = plot.training_curves(d .. "/curves.png", history)
    A.eq(#lay.panels, 3, "loss, F1, learning rate")
    A.eq(png_size(d .. "/curves.png"), 3 * 420)
    A.truthy(plot.png_info(d .. "/curves.png").colors > 50, "curves drawn")
    A.raises(function() plot.training_curves(d .. "/x.png", "log.csv") end, "history must be a list")
end)

test("errors name the path or the argument", function()
    local d = tmpdir()
    local g = gradient(3, 3)
    local bad = d .. "/no/such/folder/x.png"
    A.raises(function() plot.heatmap(bad, g) end, "cannot write", bad)
    A.raises(function() plot.lines(bad, { { y = { 1, 2 } } }) end, "cannot write", bad)
    A.eq(sys.list_folder(d), {}, "no temporary file left")
    A.raises(function() plot.heatmap(d .. "/x.png", mt.zeros{ 4 }) end, "2-d", "{4}")
    A.raises(function() plot.heatmap(d .. "/x.png", mt.zeros{ 2, 3, 4 }) end, "2-d", "{2, 3, 4}")
    A.raises(function() plot.heatmap(d .. "/x.png", mt.zeros{ 0, 3 }) end, "empty")
    A.raises(function() plot.heatmap(d .. "/x.png", { { 1, 2 } }) end, "tensor")
    A.raises(function() plot.heatmap(d .. "/x.png", g, { colormap = "jet" }) end, "colormap", "jet")
    A.raises(function() plot.heatmap(d .. "/x.png", g, { origin = "middle" }) end, "origin")
    A.raises(function() plot.heatmap(d .. "/x.png", g, { xticks = { "a", "b" } }) end, "xticks", "3 labels")
    A.raises(function() plot.heatmap(d .. "/x.png", g, { vmin = 0 / 0 }) end, "vmin")
    A.raises(function() plot.heatmap(d .. "/x.png", g, { width = 10 }) end, "width")
    A.raises(function() plot.heatmap(d .. "/x.png", g, { xrange = { 1, 1 } }) end, "xrange")
    A.raises(function() plot.heatmap(nil, g) end, "path")
    A.raises(function() plot.lines(d .. "/x.png", {}) end, "series", "non-empty")
    A.raises(function() plot.lines(d .. "/x.png", { { name = "val", y = {} } }) end, "'val'", "no points")
    A.raises(function() plot.lines(d .. "/x.png", { { name = "val", x = { 1, 2 }, y = { 1 } } }) end,
        "'val'", "x has 2 values, y has 1")
    A.raises(function() plot.lines(d .. "/x.png", { { y = { 1, "a" } } }) end, "point 2")
    A.raises(function() plot.grid(d .. "/x.png", {}) end, "panels")
    A.raises(function() plot.grid(d .. "/x.png", { { series = {} } }) end, "panel 1")
    A.raises(function() plot.png_info(d .. "/missing.png") end, "missing.png", "No such file")
    local f = assert(io.open(d .. "/text.png", "wb"))
    f:write("not a png")
    f:close()
    A.raises(function() plot.png_info(d .. "/text.png") end, "text.png", "not a PNG file")
    A.raises(function() plot.heatmap(d .. "/x.png", g, { width = 64, height = 64, title = "t", xlabel = "x" }) end, "no room")
    plot.heatmap(d .. "/ok.png", g, { width = 200, height = 150 })
    A.raises(function() plot.png_pixel(d .. "/ok.png", 200, 0) end, "outside", "200x150")
    -- nothing but the two files written on purpose
    local p = assert(io.popen("ls '" .. d .. "'"))
    local names = p:read("a")
    p:close()
    A.eq(names, "ok.png\ntext.png\n")
end)

test("canvas primitives and misuse", function()
    local C = require "machrt.plot_c"
    A.raises(function() C.canvas(0, 10) end, "out of range")
    A.raises(function() C.canvas(20000, 10) end, "out of range")
    local c = C.canvas(40, 30)
    A.eq({ c:size() }, { 40, 30 })
    A.truthy(c:text_width("abc", 12) > 10)
    A.raises(function() c:text("x", 1, 1, { halign = "middle" }) end, "halign", "middle")
    A.raises(function() c:image(mt.zeros{ 2, 2, 2 }, 0, 0, 10, 10) end, "2-d")
    A.raises(function() c:image(mt.zeros({ 2, 2 }, "int64"), 0, 0, 10, 10) end, "float32")
    c:close()
    c:close() -- idempotent
    A.raises(function() c:rect(0, 0, 1, 1) end, "closed")
    A.eq({ C.range(mt.tensor{ 0 / 0, 3, -1, math.huge }) }, { -1.0, 3.0 })
    A.eq(select("#", C.range(mt.tensor{ 0 / 0 })), 2)
    A.eq(C.range(mt.tensor{ 0 / 0 }), nil)
end)

-- ---- report ----------------------------------------------------------------------

local function sample_page(d)
    plot.heatmap(d .. "/cm.png", mt.tensor{ { 5, 1 }, { 0, 6 } }, { annotate = true, fmt = "%d",
        xticks = { "fan", "pump" }, yticks = { "fan", "pump" }, title = "confusion" })
    plot.lines(d .. "/loss.png", { { name = "train", y = { 1, 0.6, 0.4 } }, { name = "val", y = { 1.1, 0.8, 0.7 } } },
        { title = "loss", xlabel = "epoch" })
    return report.write_index(d, {
        title = "run <1> & \"friends\"",
        facts = { { "best F1", 0.96234 }, { "epochs", 3 }, { "note", "<b>not bold</b>" } },
        tables = { { title = "per class", header = { "class", "F1" }, rows = { { "fan", 0.98 }, { "pump", 0.9 } } } },
        images = { { title = "confusion", file = "cm.png" }, { title = "loss", file = "loss.png" } },
    })
end

test("report.write_index writes an escaped, self-contained page", function()
    local d = tmpdir()
    local path = sample_page(d)
    A.eq(path, d .. "/index.html")
    A.truthy(not exists(path .. ".tmp"))
    local html = read(path)
    A.truthy(html:find("<!DOCTYPE html>", 1, true))
    A.truthy(html:find("<title>run &lt;1&gt; &amp; &quot;friends&quot;</title>", 1, true), "escaped title")
    A.truthy(html:find("&lt;b&gt;not bold&lt;/b&gt;", 1, true), "escaped fact")
    A.truthy(not html:find("<b>", 1, true))
    A.truthy(html:find("<dd>0.9623</dd>", 1, true), "floats with 4 significant digits")
    A.truthy(html:find("<th>class</th><th>F1</th>", 1, true))
    A.truthy(html:find("<td class=\"num\">0.98</td>", 1, true))
    A.truthy(html:find("<img src=\"cm.png\"", 1, true))
    A.truthy(not html:find("http", 1, true), "no external resources")
    A.raises(function() report.write_index(d .. "/missing", { title = "x" }) end, "cannot write",
        d .. "/missing/index.html")
    A.raises(function() report.write_index(d, { facts = { "x" } }) end, "facts[1]")
    A.raises(function() report.write_index(d, { images = { { title = "no file" } } }) end, "images[1]")
    A.raises(function() report.write_index(d, { tables = { { rows = { 1 } } } }) end, "tables[1].rows[1]")
    A.raises(function() report.write_index(nil) end, "folder")
end)

test("the index page renders in headless chromium", function()
    local ok = os.execute("command -v chromium >/dev/null 2>&1")
    if not ok then A.skip("chromium is not installed (apt-get install chromium)") end
    local d = tmpdir()
    sample_page(d)
    local shot = d .. "/shot.png"
    os.execute("timeout 60 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --screenshot='"
        .. shot .. "' --window-size=1000,1400 'file://" .. d .. "/index.html' >/dev/null 2>&1")
    if not exists(shot) then A.skip("chromium ran but wrote no screenshot (no display support here)") end
    local info = plot.png_info(shot)
    A.eq({ info.width, info.height }, { 1000, 1400 })
    -- text, table and the two pictures: far more than a blank page's colours
    A.truthy(info.colors > 100, "rendered page has " .. info.colors .. " colours")
end)

return T
