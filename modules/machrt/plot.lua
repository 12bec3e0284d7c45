-- machrt.plot: PNG pictures drawn with cairo (heatmaps, line charts, grids of
-- line charts). The drawing primitives are C (machrt.plot_c, runtime/lua/
-- l_plot.c); this module lays out axes, ticks, labels, legends and colorbars.
--
--   local plot = require "machrt.plot"
--   plot.heatmap(path, matrix, opts)   -- matrix: 2-d float32 tensor {rows, cols}
--   plot.lines(path, series, opts)     -- series: list of {name=, x={..}, y={..}}
--   plot.grid(path, panels, opts)      -- panels: list of {series=, title=, ylabel=, ...}
--   plot.training_curves(path, history) -- a run's losses, F1 and learning rate per epoch
--   plot.png_info(path) -> {width, height, colors, mean}
--   plot.png_pixel(path, x, y) -> r, g, b, a   (pixels from 0 at the top left)
--
-- Every writer draws the whole picture, writes path .. ".tmp.<pid>.<n>" and renames
-- it to path, and returns the layout it used ({plot = {x, y, w, h}, ...},
-- in pixels), which tests use to find cells and curves.

local mt = require "machrt"
local C = require "machrt.plot_c"

local M = {
    png_info = C.png_info,
    png_pixel = C.png_pixel,
    colormap = C.colormap,
    range = C.range,
}

local INK = { 0.15, 0.15, 0.15 }
local SPINE = { 0.35, 0.35, 0.35 }
local GRIDLINE = { 0.90, 0.90, 0.90 }
local FONT = { title = 16, label = 13, tick = 12, legend = 12 }
-- matplotlib's tab10
local PALETTE = {
    { 0x1f, 0x77, 0xb4 }, { 0xff, 0x7f, 0x0e }, { 0x2c, 0xa0, 0x2c }, { 0xd6, 0x27, 0x28 },
    { 0x94, 0x67, 0xbd }, { 0x8c, 0x56, 0x4b }, { 0xe3, 0x77, 0xc2 }, { 0x7f, 0x7f, 0x7f },
    { 0xbc, 0xbd, 0x22 }, { 0x17, 0xbe, 0xcf },
}

local function fail(fmt, ...)
    error(string.format(fmt, ...), 0)
end

local function set(c, rgb, a) c:color(rgb[1], rgb[2], rgb[3], a) end

local function is_nan(v) return v ~= v end
local function finite(v) return type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge end

local function check_path(what, path)
    if type(path) ~= "string" or path == "" then
        fail("%s: path must be a non-empty string, got %s", what, type(path))
    end
end

local function check_opts(what, opts)
    if opts ~= nil and type(opts) ~= "table" then
        fail("%s: opts must be a table, got a %s", what, type(opts))
    end
    return opts or {}
end

local function check_size(what, opts, w, h)
    w, h = opts.width or w, opts.height or h
    if math.type(w) ~= "integer" or math.type(h) ~= "integer" or w < 64 or h < 64 or w > 16384 or h > 16384 then
        fail("%s: width and height must be integers from 64 to 16384 pixels, got %s x %s",
            what, tostring(w), tostring(h))
    end
    return w, h
end

-- ---- ticks --------------------------------------------------------------------

-- About n "nice" steps (1, 2, 2.5, 5 x 10^k) covering [lo, hi].
local function nice_step(lo, hi, n)
    local raw = (hi - lo) / math.max(n, 1)
    if not (raw > 0) then return 1 end
    local mag = 10 ^ math.floor(math.log(raw, 10))
    local f = raw / mag
    local m = f <= 1 and 1 or f <= 2 and 2 or f <= 2.5 and 2.5 or f <= 5 and 5 or 10
    return m * mag
end

local function ticks_in(lo, hi, step)
    local list = {}
    local k0, k1 = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    for k = k0, k1 do list[#list + 1] = k * step end
    return list
end

local function fmt_tick(v, step)
    if math.abs(v) < step * 1e-6 then return "0" end
    local dec = math.max(0, math.ceil(-math.log(step, 10) - 1e-9))
    local m = step * 10 ^ dec
    if math.abs(m - math.floor(m + 0.5)) > 1e-6 * m then dec = dec + 1 end -- 2.5 x 10^k steps
    if dec <= 3 and math.abs(v) < 1e6 then return string.format("%." .. dec .. "f", v) end
    return (string.format("%.4g", v))
end

-- Lower and upper axis limits of a data range (never empty).
local function widen(lo, hi)
    if lo == nil then return 0, 1 end
    if hi - lo < 1e-12 * math.max(1, math.abs(lo)) then
        local d = math.abs(lo) > 0 and math.abs(lo) * 0.05 or 0.5
        return lo - d, hi + d
    end
    return lo, hi
end

-- ---- shared axis drawing ----------------------------------------------------------

-- A numeric axis: {lo=, hi=, log=} -> functions value -> pixel.
local function scaler(lo, hi, p0, p1, log)
    if log then lo, hi = math.log(lo, 10), math.log(hi, 10) end
    return function(v)
        if log then v = math.log(v, 10) end
        return p0 + (v - lo) / (hi - lo) * (p1 - p0)
    end
end

-- Tick values and labels over [lo, hi]: about n nice steps; on a log axis
-- powers of ten (with 2 and 5 x when the range is short); `integer` keeps
-- ticks on whole numbers (row and column numbers).
local function tick_list(lo, hi, n, log, integer)
    local list, labels = {}, {}
    if log then
        local a, b = math.floor(math.log(lo, 10) + 1e-9), math.ceil(math.log(hi, 10) - 1e-9)
        local mults = (b - a <= 2) and { 1, 2, 5 } or { 1 }
        local first = math.ceil(math.log(lo, 10) - 1e-9)
        local visible = math.floor(math.log(hi, 10) + 1e-9) - first + 1
        local every = math.max(1, math.ceil(visible / math.max(n, 1)))
        for e = a, b do
            if (e - first) % every == 0 then
                for _, m in ipairs(mults) do
                    local v = m * 10 ^ e
                    if v >= lo * (1 - 1e-9) and v <= hi * (1 + 1e-9) then
                        list[#list + 1] = v
                        labels[#labels + 1] = (e >= -3 and e <= 4) and fmt_tick(v, 10 ^ math.min(e, 0))
                            or string.format("%ge%d", m, e)
                    end
                end
            end
        end
        return list, labels
    end
    local step = nice_step(lo, hi, n)
    if integer then step = math.max(1, math.floor(step + 0.5)) end
    for _, v in ipairs(ticks_in(lo, hi, step)) do
        list[#list + 1] = v
        labels[#labels + 1] = fmt_tick(v, step)
    end
    return list, labels
end

local function draw_title(c, text, cx, y, size)
    if text and text ~= "" then
        set(c, INK)
        c:text(tostring(text), cx, y, { size = size or FONT.title, bold = true, halign = "center", valign = "top" })
    end
end

-- ---- heatmap ----------------------------------------------------------------------

local function check_matrix(what, m)
    if not mt.is_tensor(m) then
        fail("%s: matrix must be a 2-d float32 tensor {rows, cols}, got a %s", what, type(m))
    end
    if m:dim() ~= 2 then
        local s = m:shape()
        local parts = {}
        for i, v in ipairs(s) do parts[i] = tostring(v) end
        fail("%s: matrix must be a 2-d tensor {rows, cols}, got shape {%s}", what, table.concat(parts, ", "))
    end
    local rows, cols = m:size(1), m:size(2)
    if rows < 1 or cols < 1 then fail("%s: matrix is empty (%d x %d)", what, rows, cols) end
    return rows, cols
end

local function check_labels(what, key, list, n)
    if list == nil then return nil end
    if type(list) ~= "table" or #list ~= n then
        fail("%s: %s must be a list of %d labels, got %s", what, key, n,
            type(list) == "table" and (#list .. " labels") or type(list))
    end
    local out = {}
    for i = 1, n do out[i] = tostring(list[i]) end
    return out
end

local function check_range(what, key, r)
    if r == nil then return nil end
    if type(r) ~= "table" or not finite(r[1]) or not finite(r[2]) or r[1] == r[2] then
        fail("%s: %s must be {from, to} with two different finite numbers", what, key)
    end
    return r
end

local function cell_text(v, fmt)
    if is_nan(v) then return "nan" end
    if fmt:find("d") then
        if not finite(v) then return tostring(v) end
        return string.format(fmt, math.floor(v + 0.5))
    end
    return string.format(fmt, v)
end

-- plot.heatmap(path, matrix, opts) -> layout
-- opts: title, xlabel, ylabel, colormap ("viridis" | "magma" | "gray"),
-- vmin, vmax (default: finite data min / max), origin ("upper" | "lower"),
-- width, height (800 x 400; 640 x 560 with annotate), colorbar (true),
-- clabel (colorbar label), annotate (false), fmt ("%.2f"; "%d" rounds),
-- xticks / yticks (category labels, one per column / row), xrange / yrange
-- ({from, to}: numeric axis over the matrix's full extent; default: the
-- column / row numbers), square (equal cell sides), smooth (interpolate).
function M.heatmap(path, matrix, opts)
    local what = "plot.heatmap"
    check_path(what, path)
    opts = check_opts(what, opts)
    local rows, cols = check_matrix(what, matrix)
    local W, H = check_size(what, opts, opts.annotate and 640 or 800, opts.annotate and 560 or 400)
    local origin = opts.origin or "upper"
    if origin ~= "upper" and origin ~= "lower" then
        fail("%s: origin must be \"upper\" or \"lower\", got %s", what, tostring(origin))
    end
    local cmap = opts.colormap or "viridis"
    if cmap ~= "viridis" and cmap ~= "magma" and cmap ~= "gray" then
        fail("%s: colormap must be \"viridis\", \"magma\" or \"gray\", got %s", what, tostring(cmap))
    end
    local xt = check_labels(what, "xticks", opts.xticks, cols)
    local yt = check_labels(what, "yticks", opts.yticks, rows)
    local xr = check_range(what, "xrange", opts.xrange) or (not xt and { 0.5, cols + 0.5 })
    local yr = check_range(what, "yrange", opts.yrange) or (not yt and { 0.5, rows + 0.5 })
    local xint, yint = opts.xrange == nil, opts.yrange == nil -- row / column numbers
    for _, k in ipairs { "vmin", "vmax" } do
        if opts[k] ~= nil and not finite(opts[k]) then fail("%s: %s must be a finite number", what, k) end
    end
    local lo, hi = C.range(matrix)
    local vmin, vmax = opts.vmin or lo or 0, opts.vmax or hi or 1
    local fmt = opts.fmt or "%.2f"
    if type(fmt) ~= "string" or not pcall(string.format, fmt, 1.0) then
        fail("%s: fmt must be a format such as \"%%d\" or \"%%.2f\"", what)
    end
    local colorbar = opts.colorbar ~= false

    local c <close> = C.canvas(W, H)
    -- Margins: measured from the labels that will be drawn.
    local top = 12 + ((opts.title and opts.title ~= "") and FONT.title + 14 or 0)
    local ylab_w = 0
    local ylabels
    if yt then
        ylabels = yt
    else
        local _, l = tick_list(math.min(yr[1], yr[2]), math.max(yr[1], yr[2]), 6, false, yint)
        ylabels = l
    end
    for _, s in ipairs(ylabels) do ylab_w = math.max(ylab_w, c:text_width(s, FONT.tick)) end
    local left = 10 + (opts.ylabel and FONT.label + 10 or 0) + ylab_w + 8
    local cb_w = colorbar and 16 or 0
    local cb_lab = 0
    if colorbar then
        local _, l = tick_list(math.min(vmin, vmax), math.max(vmin, vmax), 6, false)
        for _, s in ipairs(l) do cb_lab = math.max(cb_lab, c:text_width(s, FONT.tick)) end
    end
    local right = 14 + (colorbar and (18 + cb_w + 6 + cb_lab + (opts.clabel and FONT.label + 12 or 0)) or 0)
    -- Category labels on x turn 45 degrees when they do not fit side by side.
    local pw0 = W - left - right
    local xrot = false
    local xlab_h = FONT.tick + 8
    if xt then
        local widest = 0
        for _, s in ipairs(xt) do widest = math.max(widest, c:text_width(s, FONT.tick)) end
        if widest + 6 > pw0 / cols then
            xrot = true
            xlab_h = widest * 0.72 + FONT.tick + 8
            -- the first label reaches left of its column by about 0.7 x its width
            local reach = c:text_width(xt[1], FONT.tick) * 0.72 + 8 - pw0 / cols / 2
            if reach > left then left = math.ceil(reach) end
        end
    end
    local bottom = 8 + xlab_h + (opts.xlabel and FONT.label + 10 or 0)
    local px, py, pw, ph = left, top, W - left - right, H - top - bottom
    if pw < 8 or ph < 8 then fail("%s: %d x %d pixels leave no room for the matrix", what, W, H) end
    if opts.square then
        local cell = math.min(pw / cols, ph / rows)
        local nw, nh = cell * cols, cell * rows
        px, py, pw, ph = px + (pw - nw) / 2, py + (ph - nh) / 2, nw, nh
    end
    px, py, pw, ph = math.floor(px + 0.5), math.floor(py + 0.5), math.floor(pw + 0.5), math.floor(ph + 0.5)

    vmin, vmax = c:image(matrix, px, py, pw, ph,
        { colormap = cmap, vmin = vmin, vmax = vmax, origin = origin, smooth = opts.smooth })

    -- Cell values, dark on light cells and light on dark ones.
    if opts.annotate then
        local cw, ch = pw / cols, ph / rows
        local t = matrix:totable()
        local longest = 1
        for i = 1, rows do
            for j = 1, cols do longest = math.max(longest, #cell_text(t[i][j], fmt)) end
        end
        local size = math.min(ch * 0.45, cw / (longest * 0.62), 16)
        if size >= 5 then
            for i = 1, rows do
                for j = 1, cols do
                    local v = t[i][j]
                    local u = (vmax ~= vmin) and (v - vmin) / (vmax - vmin) or 0.5
                    local r, g, b = C.colormap(cmap, is_nan(v) and 0.5 or u)
                    if is_nan(v) then r, g, b = 0.82, 0.82, 0.82 end
                    local lum = 0.299 * r + 0.587 * g + 0.114 * b
                    if lum > 0.55 then c:color(0.1, 0.1, 0.1) else c:color(1, 1, 1) end
                    local row = origin == "lower" and rows - i + 1 or i
                    c:text(cell_text(v, fmt), px + (j - 0.5) * cw, py + (row - 0.5) * ch,
                        { size = size, halign = "center", valign = "middle" })
                end
            end
        end
    end

    -- Frame and ticks.
    set(c, SPINE)
    c:line_width(1)
    c:rect(px + 0.5, py + 0.5, pw - 1, ph - 1)
    c:stroke()
    set(c, INK)
    local yb = py + ph
    if xt then
        for j, s in ipairs(xt) do
            local x = px + (j - 0.5) * pw / cols
            c:move_to(x, yb); c:line_to(x, yb + 4); c:stroke()
            if xrot then
                c:text(s, x + 3, yb + 8, { size = FONT.tick, halign = "right", valign = "top", angle = 45 })
            else
                c:text(s, x, yb + 8, { size = FONT.tick, halign = "center", valign = "top" })
            end
        end
    else
        local sx = scaler(xr[1], xr[2], px, px + pw)
        local list, labels = tick_list(math.min(xr[1], xr[2]), math.max(xr[1], xr[2]), math.max(2, pw // 90), false, xint)
        for k, v in ipairs(list) do
            local x = math.floor(sx(v)) + 0.5
            c:move_to(x, yb); c:line_to(x, yb + 4); c:stroke()
            c:text(labels[k], x, yb + 8, { size = FONT.tick, halign = "center", valign = "top" })
        end
    end
    local function row_y(r) -- centre of row r (1-based) in pixels
        local k = origin == "lower" and rows - r + 1 or r
        return py + (k - 0.5) * ph / rows
    end
    if yt then
        for i, s in ipairs(yt) do
            local y = row_y(i)
            c:move_to(px, y); c:line_to(px - 4, y); c:stroke()
            c:text(s, px - 7, y, { size = FONT.tick, halign = "right", valign = "middle" })
        end
    else
        local sy = origin == "lower" and scaler(yr[1], yr[2], py + ph, py) or scaler(yr[1], yr[2], py, py + ph)
        local list, labels = tick_list(math.min(yr[1], yr[2]), math.max(yr[1], yr[2]), math.max(2, ph // 50), false, yint)
        for k, v in ipairs(list) do
            local y = math.floor(sy(v)) + 0.5
            c:move_to(px, y); c:line_to(px - 4, y); c:stroke()
            c:text(labels[k], px - 7, y, { size = FONT.tick, halign = "right", valign = "middle" })
        end
    end
    if opts.xlabel then
        c:text(tostring(opts.xlabel), px + pw / 2, H - 8, { size = FONT.label, halign = "center", valign = "bottom" })
    end
    if opts.ylabel then
        c:text(tostring(opts.ylabel), 10, py + ph / 2, { size = FONT.label, halign = "center", valign = "top", angle = 90 })
    end
    draw_title(c, opts.title, W / 2, 12)

    -- Colorbar: the map from vmin (bottom) to vmax (top), with nice ticks.
    if colorbar then
        local bx = px + pw + 18
        c:colorbar(bx, py, cb_w, ph, cmap)
        set(c, SPINE)
        c:rect(bx + 0.5, py + 0.5, cb_w - 1, ph - 1)
        c:stroke()
        set(c, INK)
        if vmax ~= vmin then
            local sy = scaler(vmin, vmax, py + ph, py)
            local list, labels = tick_list(math.min(vmin, vmax), math.max(vmin, vmax), math.max(2, ph // 50), false)
            for k, v in ipairs(list) do
                local y = math.floor(sy(v)) + 0.5
                c:move_to(bx + cb_w, y); c:line_to(bx + cb_w + 4, y); c:stroke()
                c:text(labels[k], bx + cb_w + 6, y, { size = FONT.tick, valign = "middle" })
            end
        end
        if opts.clabel then
            c:text(tostring(opts.clabel), W - 8, py + ph / 2,
                { size = FONT.label, halign = "center", valign = "baseline", angle = 90 })
        end
    end
    c:write_png(path)
    return { width = W, height = H, plot = { x = px, y = py, w = pw, h = ph }, vmin = vmin, vmax = vmax }
end

-- ---- line charts ---------------------------------------------------------------------

local function check_series(what, series)
    if type(series) ~= "table" or #series == 0 then
        fail("%s: series must be a non-empty list of {name=, x={...}, y={...}}", what)
    end
    local out = {}
    for i, s in ipairs(series) do
        if type(s) ~= "table" or type(s.y) ~= "table" then
            fail("%s: series %d must be a table with a list y", what, i)
        end
        local label = s.name and ("'" .. tostring(s.name) .. "'") or tostring(i)
        local n = #s.y
        if n == 0 then fail("%s: series %s has no points", what, label) end
        if s.x ~= nil and (type(s.x) ~= "table" or #s.x ~= n) then
            fail("%s: series %s: x has %s values, y has %d", what, label,
                type(s.x) == "table" and tostring(#s.x) or "no list of", n)
        end
        local x, y = {}, {}
        for k = 1, n do
            local xv, yv = s.x and s.x[k] or k, s.y[k]
            if type(xv) ~= "number" or type(yv) ~= "number" then
                fail("%s: series %s: point %d is not a pair of numbers", what, label, k)
            end
            x[k], y[k] = xv, yv
        end
        out[i] = { name = s.name and tostring(s.name) or ("series " .. i), x = x, y = y }
    end
    return out
end

local function usable(x, y, ylog) return finite(x) and finite(y) and (not ylog or y > 0) end

-- Draws one line chart into the rectangle (x0, y0, w, h) of canvas c.
local function draw_chart(c, x0, y0, w, h, list, o)
    local ylog = o.ylog and true or false
    local xl, xh, yl, yh
    for _, s in ipairs(list) do
        for k = 1, #s.y do
            local x, y = s.x[k], s.y[k]
            if usable(x, y, ylog) then
                xl, xh = math.min(xl or x, x), math.max(xh or x, x)
                yl, yh = math.min(yl or y, y), math.max(yh or y, y)
            end
        end
    end
    xl, xh = widen(xl, xh)
    local xpad = (xh - xl) * 0.02
    xl, xh = xl - xpad, xh + xpad
    if o.xlim then xl, xh = o.xlim[1], o.xlim[2] end
    if ylog then
        if yl == nil then yl, yh = 1, 10 end
        if yh / yl < 1.5 then yl, yh = yl / 1.25, yh * 1.25 end
        local a, b = math.log(yl, 10), math.log(yh, 10)
        local pad = (b - a) * 0.05
        yl, yh = 10 ^ (a - pad), 10 ^ (b + pad)
    else
        yl, yh = widen(yl, yh)
        local pad = (yh - yl) * 0.05
        yl, yh = yl - pad, yh + pad
    end
    if o.ylim then yl, yh = o.ylim[1], o.ylim[2] end

    local top = y0 + 10 + ((o.title and o.title ~= "") and FONT.title + 12 or 0)
    local yticks, ylabels = tick_list(yl, yh, math.max(2, (h - 80) // 45), ylog)
    local lw = 0
    for _, s in ipairs(ylabels) do lw = math.max(lw, c:text_width(s, FONT.tick)) end
    local px = x0 + 10 + (o.ylabel and FONT.label + 10 or 0) + lw + 8
    local pr = x0 + w - 16
    local pb = y0 + h - (8 + FONT.tick + 10 + (o.xlabel and FONT.label + 10 or 0))
    local pw, ph = pr - px, pb - top
    if pw < 20 or ph < 20 then fail("%s: the picture is too small for its chart", o.what) end
    local sx, sy = scaler(xl, xh, px, pr), scaler(yl, yh, pb, top, ylog)
    local xticks, xlabels = tick_list(xl, xh, math.max(2, pw // 80), false)

    -- Grid lines, then spines, ticks and their labels.
    c:line_width(1)
    set(c, GRIDLINE)
    for _, v in ipairs(yticks) do
        local y = math.floor(sy(v)) + 0.5
        c:move_to(px, y); c:line_to(pr, y)
    end
    for _, v in ipairs(xticks) do
        local x = math.floor(sx(v)) + 0.5
        c:move_to(x, top); c:line_to(x, pb)
    end
    c:stroke()
    set(c, SPINE)
    c:move_to(px + 0.5, top); c:line_to(px + 0.5, pb + 0.5); c:line_to(pr, pb + 0.5)
    c:stroke()
    set(c, INK)
    for k, v in ipairs(yticks) do
        local y = math.floor(sy(v)) + 0.5
        c:move_to(px, y); c:line_to(px - 4, y); c:stroke()
        c:text(ylabels[k], px - 7, y, { size = FONT.tick, halign = "right", valign = "middle" })
    end
    for k, v in ipairs(xticks) do
        local x = math.floor(sx(v)) + 0.5
        c:move_to(x, pb); c:line_to(x, pb + 4); c:stroke()
        c:text(xlabels[k], x, pb + 8, { size = FONT.tick, halign = "center", valign = "top" })
    end
    if o.xlabel then
        c:text(tostring(o.xlabel), (px + pr) / 2, y0 + h - 8, { size = FONT.label, halign = "center", valign = "bottom" })
    end
    if o.ylabel then
        c:text(tostring(o.ylabel), x0 + 10, (top + pb) / 2, { size = FONT.label, halign = "center", valign = "top", angle = 90 })
    end
    draw_title(c, o.title, (px + pr) / 2, y0 + 10, o.title_size)

    -- Curves, broken where a point is NaN (or not positive on a log axis);
    -- markers when there are few points.
    c:save()
    c:rect(px, top - 3, pw + 3, ph + 6)
    c:clip()
    c:line_width(2)
    for i, s in ipairs(list) do
        local col = PALETTE[(i - 1) % #PALETTE + 1]
        c:color(col[1] / 255, col[2] / 255, col[3] / 255)
        local pen = false
        for k = 1, #s.y do
            if usable(s.x[k], s.y[k], ylog) then
                local x, y = sx(s.x[k]), sy(s.y[k])
                if pen then c:line_to(x, y) else c:move_to(x, y) end
                pen = true
            else
                pen = false
            end
        end
        c:stroke()
        if #s.y <= 60 then
            for k = 1, #s.y do
                if usable(s.x[k], s.y[k], ylog) then c:circle(sx(s.x[k]), sy(s.y[k]), 2.6) end
            end
            c:fill()
        end
    end
    c:restore()

    -- Legend (more than one series) in the corner with the fewest points.
    if #list > 1 then
        local lwid = 0
        for _, s in ipairs(list) do lwid = math.max(lwid, c:text_width(s.name, FONT.legend)) end
        local bw, bh = lwid + 40, #list * (FONT.legend + 6) + 8
        local best, best_n
        for _, corner in ipairs { { pr - bw - 8, top + 6 }, { px + 8, top + 6 }, { pr - bw - 8, pb - bh - 6 }, { px + 8, pb - bh - 6 } } do
            local n = 0
            for _, s in ipairs(list) do
                for k = 1, #s.y do
                    if usable(s.x[k], s.y[k], ylog) then
                        local x, y = sx(s.x[k]), sy(s.y[k])
                        if x >= corner[1] - 4 and x <= corner[1] + bw + 4 and y >= corner[2] - 4 and y <= corner[2] + bh + 4 then
                            n = n + 1
                        end
                    end
                end
            end
            if not best_n or n < best_n then best, best_n = corner, n end
        end
        local lx, ly = best[1], best[2]
        c:color(1, 1, 1, 0.88)
        c:rect(lx, ly, bw, bh)
        c:fill()
        set(c, { 0.8, 0.8, 0.8 })
        c:rect(lx + 0.5, ly + 0.5, bw - 1, bh - 1)
        c:stroke()
        for i, s in ipairs(list) do
            local col = PALETTE[(i - 1) % #PALETTE + 1]
            local y = ly + 4 + (i - 0.5) * (FONT.legend + 6)
            c:color(col[1] / 255, col[2] / 255, col[3] / 255)
            c:line_width(2)
            c:move_to(lx + 8, y); c:line_to(lx + 28, y); c:stroke()
            set(c, INK)
            c:text(s.name, lx + 34, y, { size = FONT.legend, valign = "middle" })
        end
    end
    return { x = px, y = top, w = pw, h = ph, xlim = { xl, xh }, ylim = { yl, yh } }
end

local function check_lim(what, key, v)
    if v ~= nil and (type(v) ~= "table" or not finite(v[1]) or not finite(v[2]) or v[1] >= v[2]) then
        fail("%s: %s must be {low, high} with low < high", what, key)
    end
end

-- plot.lines(path, series, opts) -> layout
-- series: list of {name=, x={...} (default 1..#y), y={...}}; NaN points (and
-- points <= 0 with ylog) are skipped, breaking the line. opts: title, xlabel,
-- ylabel, width (800), height (400), ylog (false), xlim / ylim ({low, high}).
-- A legend is drawn when there is more than one series.
function M.lines(path, series, opts)
    local what = "plot.lines"
    check_path(what, path)
    opts = check_opts(what, opts)
    local list = check_series(what, series)
    local W, H = check_size(what, opts, 800, 400)
    check_lim(what, "xlim", opts.xlim)
    check_lim(what, "ylim", opts.ylim)
    if opts.ylog and opts.ylim and opts.ylim[1] <= 0 then fail("%s: ylim must be positive with ylog", what) end
    local c <close> = C.canvas(W, H)
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    o.what = what
    local lay = draw_chart(c, 0, 0, W, H, list, o)
    c:write_png(path)
    return { width = W, height = H, plot = lay }
end

-- plot.grid(path, panels, opts) -> layout
-- Several line charts in one picture. panels: list of {series=, title=,
-- xlabel=, ylabel=, ylog=, ylim=}; opts: title, cols (default: up to 3 side
-- by side), width, height (default 420 x 320 per panel).
function M.grid(path, panels, opts)
    local what = "plot.grid"
    check_path(what, path)
    opts = check_opts(what, opts)
    if type(panels) ~= "table" or #panels == 0 then
        fail("%s: panels must be a non-empty list of {series=, title=, ylabel=}", what)
    end
    local checked = {}
    for i, p in ipairs(panels) do
        if type(p) ~= "table" then fail("%s: panel %d must be a table", what, i) end
        checked[i] = check_series(what .. " (panel " .. i .. ")", p.series)
        check_lim(what, "ylim of panel " .. i, p.ylim)
    end
    local cols = opts.cols or math.min(#panels, 3)
    if math.type(cols) ~= "integer" or cols < 1 then fail("%s: cols must be a positive integer", what) end
    local rows = math.ceil(#panels / cols)
    local head = (opts.title and opts.title ~= "") and FONT.title + 18 or 0
    local W, H = check_size(what, opts, 420 * cols, 320 * rows + head)
    local c <close> = C.canvas(W, H)
    draw_title(c, opts.title, W / 2, 10, FONT.title + 2)
    local cw, ch = W / cols, (H - head) / rows
    local out = {}
    for i, p in ipairs(panels) do
        local r, k = (i - 1) // cols, (i - 1) % cols
        out[i] = draw_chart(c, k * cw, head + r * ch, cw, ch, checked[i], {
            title = p.title, xlabel = p.xlabel, ylabel = p.ylabel, ylog = p.ylog, ylim = p.ylim,
            title_size = FONT.label + 1, what = what,
        })
    end
    c:write_png(path)
    return { width = W, height = H, panels = out }
end

-- plot.training_curves(path, history) -> layout
-- The training curves of a run's history (one row per epoch, as log.csv):
-- training and validation loss, validation F1 and the learning rate at the
-- end of each epoch. An epoch without evaluation leaves a gap (NaN).
function M.training_curves(path, history)
    if type(history) ~= "table" then fail("plot.training_curves: history must be a list of epoch rows") end
    local epochs, tl, vl, f1, lr = {}, {}, {}, {}, {}
    for i, h in ipairs(history) do
        epochs[i], tl[i], lr[i] = h.epoch, h.train_loss, h.lr
        vl[i], f1[i] = h.val_loss or 0 / 0, h.val_f1 or 0 / 0
    end
    return M.grid(path, {
        { title = "loss", xlabel = "epoch", series = { { name = "training", x = epochs, y = tl },
                                                        { name = "validation", x = epochs, y = vl } } },
        { title = "validation F1", xlabel = "epoch", ylim = { 0, 1 },
          series = { { name = "F1", x = epochs, y = f1 } } },
        { title = "learning rate (end of epoch)", xlabel = "epoch", series = { { name = "lr", x = epochs, y = lr } } },
    }, { title = "training curves" })
end

return M
