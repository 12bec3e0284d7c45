/* Tensor core: lifecycle, queries, views, copies (runtime/include/machrt/tensor.h). */
#include <stdlib.h>

#include "check_util.h"

/* ---- status ------------------------------------------------------------------ */

START_TEST(test_fail_records_message) {
    ck_assert_int_eq(mrt_fail(MRT_ERR_ARG, "bad %s %d", "thing", 7), MRT_ERR_ARG);
    ck_assert_str_eq(mrt_last_error(), "bad thing 7");
    for (int c = MRT_OK; c <= MRT_ERR_DTYPE; c++) {
        const char *name = mrt_status_name((mrt_status)c);
        ck_assert_ptr_nonnull(name);
        ck_assert_msg(name[0] != '\0', "status %d has an empty name", c);
    }
}
END_TEST

/* ---- storage ------------------------------------------------------------------- */

START_TEST(test_storage_refcount) {
    mrt_storage *s = NULL;
    TU_OK(mrt_storage_new(64, MRT_CPU, &s));
    ck_assert_ptr_nonnull(s);
    ck_assert_ptr_nonnull(s->data);
    ck_assert_uint_eq(s->nbytes, 64);
    ck_assert_int_eq(s->refcount, 1);
    ck_assert_int_eq(s->device, MRT_CPU);
    mrt_storage_retain(s);
    ck_assert_int_eq(s->refcount, 2);
    mrt_storage_release(s);
    ck_assert_int_eq(s->refcount, 1);
    mrt_storage_release(s); /* frees; ASan reports it if it did not */
}
END_TEST

/* ---- lifecycle and queries ------------------------------------------------------ */

START_TEST(test_alloc_zero_filled_contiguous) {
    /* Dirty the heap first so a zero result cannot come from fresh pages. */
    for (int k = 0; k < 4; k++) {
        mrt_tensor junk = {0};
        TU_ALLOC(&junk, MRT_F32, 2, 3, 4);
        tu_fill_uniform(&junk, 100 + (uint64_t)k, 1.0, 2.0);
        mrt_tensor_release(&junk);
    }
    mrt_tensor t = {0};
    TU_ALLOC(&t, MRT_F32, 2, 3, 4);
    ck_assert_ptr_nonnull(t.storage);
    ck_assert_int_eq(t.dtype, MRT_F32);
    ck_assert_int_eq(t.offset, 0);
    TU_ASSERT_SHAPE(&t, 2, 3, 4);
    TU_ASSERT_STRIDE(&t, 12, 4, 1);
    ck_assert_int_eq(t.storage->refcount, 1);
    ck_assert_int_eq(t.storage->device, MRT_CPU);
    ck_assert_uint_ge(t.storage->nbytes, 24 * sizeof(float));
    ck_assert_int_eq(mrt_tensor_numel(&t), 24);
    ck_assert(mrt_tensor_is_contiguous(&t));
    for (int64_t i = 0; i < 24; i++) ck_assert(tu_get(&t, i) == 0.0);
    /* mrt_f32 must agree with the raw storage for a fresh tensor. */
    ck_assert_ptr_eq(mrt_f32(&t), t.storage->data);
    mrt_tensor_release(&t);
}
END_TEST

START_TEST(test_alloc_invalid_shape) {
    mrt_tensor t = {0};
    TU_FAILS(MRT_ERR_SHAPE, mrt_tensor_alloc(&t, MRT_F32, TU_SHAPE(2, -3)));
    ck_assert_ptr_null(t.storage);
    int64_t many[MRT_MAX_DIMS + 1];
    for (int d = 0; d <= MRT_MAX_DIMS; d++) many[d] = 1;
    TU_FAILS_ANY(mrt_tensor_alloc(&t, MRT_F32, MRT_MAX_DIMS + 1, many));
    ck_assert_ptr_null(t.storage);
    /* MRT_MAX_DIMS itself is allowed. */
    TU_OK(mrt_tensor_alloc(&t, MRT_F32, MRT_MAX_DIMS, many));
    ck_assert_int_eq(mrt_tensor_numel(&t), 1);
    mrt_tensor_release(&t);
}
END_TEST

START_TEST(test_alloc_int64) {
    mrt_tensor t = {0};
    TU_ALLOC(&t, MRT_I64, 3, 2);
    ck_assert_int_eq(t.dtype, MRT_I64);
    TU_ASSERT_STRIDE(&t, 2, 1);
    ck_assert_uint_ge(t.storage->nbytes, 6 * sizeof(int64_t));
    for (int64_t i = 0; i < 6; i++) ck_assert_int_eq(mrt_i64(&t)[i], 0);
    /* Values beyond float precision must survive: int64 is not float storage. */
    mrt_i64(&t)[5] = (INT64_C(1) << 53) + 1;
    ck_assert(mrt_i64(&t)[5] == (INT64_C(1) << 53) + 1);
    mrt_tensor_release(&t);

    ck_assert_uint_eq(mrt_dtype_size(MRT_F32), 4);
    ck_assert_uint_eq(mrt_dtype_size(MRT_I64), 8);
    ck_assert_str_eq(mrt_dtype_name(MRT_F32), "float32");
    ck_assert_str_eq(mrt_dtype_name(MRT_I64), "int64");
    ck_assert_str_eq(mrt_device_name(MRT_CPU), "cpu");
    ck_assert_str_eq(mrt_device_name(MRT_CUDA), "cuda");
}
END_TEST

START_TEST(test_scalar_0d) {
    mrt_tensor t = {0};
    tu_alloc_scalar(&t, MRT_F32);
    ck_assert_int_eq(t.ndim, 0);
    ck_assert_int_eq(mrt_tensor_numel(&t), 1);
    ck_assert(mrt_tensor_is_contiguous(&t));
    ck_assert(mrt_f32(&t)[0] == 0.0f);
    TU_OK(mrt_tensor_fill(&t, 3.5));
    ck_assert(mrt_f32(&t)[0] == 3.5f);

    int64_t off = -1;
    int64_t no_idx = 0;
    TU_OK(mrt_tensor_index_offset(&t, 0, &no_idx, &off));
    ck_assert_int_eq(off, 0);

    mrt_tensor c = {0};
    TU_OK(mrt_tensor_clone(&c, &t));
    ck_assert_int_eq(c.ndim, 0);
    ck_assert(mrt_f32(&c)[0] == 3.5f);

    /* A 0-d tensor is reshapeable to any all-ones shape and back. */
    mrt_tensor r = {0}, back = {0};
    TU_OK(mrt_view_reshape(&t, TU_SHAPE(1, 1), &r));
    TU_ASSERT_SHAPE(&r, 1, 1);
    ck_assert(tu_get(&r, 0) == 3.5);
    int64_t unused = 1;
    TU_OK(mrt_view_reshape(&r, 0, &unused, &back));
    ck_assert_int_eq(back.ndim, 0);
    ck_assert_ptr_eq(back.storage, t.storage);

    mrt_tensor_release(&back);
    mrt_tensor_release(&r);
    mrt_tensor_release(&c);
    mrt_tensor_release(&t);
}
END_TEST

START_TEST(test_numel_and_contiguity) {
    mrt_tensor a = {0}, b = {0}, c = {0};
    TU_ALLOC(&a, MRT_F32, 7);
    TU_ALLOC(&b, MRT_F32, 1, 1, 1);
    TU_ALLOC(&c, MRT_F32, 2, 1, 3, 5);
    ck_assert_int_eq(mrt_tensor_numel(&a), 7);
    ck_assert_int_eq(mrt_tensor_numel(&b), 1);
    ck_assert_int_eq(mrt_tensor_numel(&c), 30);

    mrt_tensor tr = {0}, nr = {0}, nr_rows = {0};
    TU_OK(mrt_view_transpose(&c, 0, 3, &tr));
    ck_assert(!mrt_tensor_is_contiguous(&tr));
    ck_assert_int_eq(mrt_tensor_numel(&tr), 30);
    /* Narrowing an inner dim leaves gaps; narrowing the outermost does not. */
    TU_OK(mrt_view_narrow(&c, 3, 1, 3, &nr));
    ck_assert(!mrt_tensor_is_contiguous(&nr));
    TU_OK(mrt_view_narrow(&c, 0, 1, 1, &nr_rows));
    ck_assert(mrt_tensor_is_contiguous(&nr_rows));

    mrt_tensor_release(&nr_rows);
    mrt_tensor_release(&nr);
    mrt_tensor_release(&tr);
    mrt_tensor_release(&c);
    mrt_tensor_release(&b);
    mrt_tensor_release(&a);
}
END_TEST

START_TEST(test_release_idempotent) {
    mrt_tensor t = {0};
    TU_ALLOC(&t, MRT_F32, 4, 4);
    mrt_tensor_release(&t);
    ck_assert_ptr_null(t.storage);
    mrt_tensor_release(&t); /* a double free would abort under ASan */
    ck_assert_ptr_null(t.storage);

    mrt_tensor empty = {0};
    mrt_tensor_release(&empty);
    ck_assert_ptr_null(empty.storage);

    /* A released tensor is empty again, so it can be reallocated. */
    TU_ALLOC(&t, MRT_F32, 2);
    mrt_tensor_release(&t);
}
END_TEST

START_TEST(test_share_refcount) {
    mrt_tensor base = {0}, same = {0}, view = {0};
    TU_ALLOC(&base, MRT_F32, 3, 4);
    tu_fill_iota(&base);
    mrt_tensor_share(&same, &base);
    ck_assert_ptr_eq(same.storage, base.storage);
    ck_assert_int_eq(base.storage->refcount, 2);
    TU_ASSERT_SHAPE(&same, 3, 4);
    TU_ASSERT_STRIDE(&same, 4, 1);
    ck_assert_int_eq(same.offset, base.offset);

    TU_OK(mrt_view_transpose(&base, 0, 1, &view));
    ck_assert_int_eq(base.storage->refcount, 3);

    /* Views keep the storage alive after the base is gone. */
    mrt_tensor_release(&base);
    ck_assert_int_eq(same.storage->refcount, 2);
    mrt_tensor_release(&same);
    ck_assert_int_eq(view.storage->refcount, 1);
    TU_ASSERT_SHAPE(&view, 4, 3);
    for (int64_t i = 0; i < 4; i++)
        for (int64_t j = 0; j < 3; j++)
            ck_assert(tu_get_idx(&view, (int64_t[]){i, j}) == (double)(j * 4 + i));
    mrt_tensor_release(&view);
}
END_TEST

START_TEST(test_clone_noncontiguous) {
    mrt_tensor base = {0}, tr = {0}, nr = {0}, c1 = {0}, c2 = {0};
    TU_ALLOC(&base, MRT_F32, 3, 4, 5);
    tu_fill_iota(&base);
    TU_OK(mrt_view_permute(&base, (int[]){2, 0, 1}, &tr));
    TU_OK(mrt_view_narrow(&tr, 2, 1, 2, &nr)); /* 5x3x2, offset and gaps */

    TU_OK(mrt_tensor_clone(&c1, &nr));
    ck_assert_ptr_ne(c1.storage, base.storage);
    ck_assert_int_eq(c1.storage->refcount, 1);
    TU_ASSERT_SHAPE(&c1, 5, 3, 2);
    TU_ASSERT_STRIDE(&c1, 6, 2, 1);
    ck_assert_int_eq(c1.offset, 0);
    ck_assert(mrt_tensor_is_contiguous(&c1));
    ck_assert(tu_max_abs_diff(&c1, &nr) == 0.0);

    /* The clone is independent of its source. */
    tu_set(&c1, 0, -1.0);
    ck_assert(tu_get(&nr, 0) != -1.0);

    /* Cloning a contiguous tensor copies too (clone is not a view). */
    TU_OK(mrt_tensor_clone(&c2, &base));
    ck_assert_ptr_ne(c2.storage, base.storage);
    ck_assert(tu_max_abs_diff(&c2, &base) == 0.0);

    mrt_tensor_release(&c2);
    mrt_tensor_release(&c1);
    mrt_tensor_release(&nr);
    mrt_tensor_release(&tr);
    mrt_tensor_release(&base);
}
END_TEST

START_TEST(test_clone_int64) {
    mrt_tensor base = {0}, tr = {0}, c = {0};
    TU_ALLOC(&base, MRT_I64, 2, 3);
    for (int64_t i = 0; i < 6; i++) mrt_i64(&base)[i] = (INT64_C(1) << 40) + i;
    TU_OK(mrt_view_transpose(&base, 0, 1, &tr));
    TU_OK(mrt_tensor_clone(&c, &tr));
    ck_assert_int_eq(c.dtype, MRT_I64);
    TU_ASSERT_SHAPE(&c, 3, 2);
    for (int64_t i = 0; i < 3; i++)
        for (int64_t j = 0; j < 2; j++)
            ck_assert(mrt_i64(&c)[i * 2 + j] == (INT64_C(1) << 40) + j * 3 + i);
    mrt_tensor_release(&c);
    mrt_tensor_release(&tr);
    mrt_tensor_release(&base);
}
END_TEST

/* ---- views ---------------------------------------------------------------------- */

START_TEST(test_view_reshape) {
    mrt_tensor base = {0}, a = {0}, b = {0}, flat = {0};
    TU_ALLOC(&base, MRT_F32, 2, 3, 4);
    tu_fill_iota(&base);

    TU_OK(mrt_view_reshape(&base, TU_SHAPE(6, 4), &a));
    TU_ASSERT_SHAPE(&a, 6, 4);
    TU_ASSERT_STRIDE(&a, 4, 1);
    ck_assert_ptr_eq(a.storage, base.storage);
    ck_assert_int_eq(a.offset, 0);

    /* Size-1 dims: their strides are irrelevant to addressing, so only the
     * addressing and the strides of the real dims are pinned down. */
    TU_OK(mrt_view_reshape(&base, TU_SHAPE(1, 4, 1, 6, 1), &b));
    TU_ASSERT_SHAPE(&b, 1, 4, 1, 6, 1);
    ck_assert_int_eq(b.stride[1], 6);
    ck_assert_int_eq(b.stride[3], 1);
    ck_assert(mrt_tensor_is_contiguous(&b));
    for (int64_t i = 0; i < 24; i++) ck_assert(tu_get(&b, i) == (double)i);

    TU_OK(mrt_view_reshape(&b, TU_SHAPE(24), &flat));
    TU_ASSERT_STRIDE(&flat, 1);

    /* Writes through any view land in the shared storage. */
    tu_set(&a, 5 * 4 + 2, -7.0); /* a[5][2] is flat 22 == base[1][2][2] */
    ck_assert(tu_get_idx(&base, (int64_t[]){1, 2, 2}) == -7.0);
    tu_set(&b, 23, -9.0);
    ck_assert(tu_get(&base, 23) == -9.0);
    ck_assert(tu_get(&flat, 23) == -9.0);

    mrt_tensor_release(&flat);
    mrt_tensor_release(&b);
    mrt_tensor_release(&a);
    mrt_tensor_release(&base);
}
END_TEST

START_TEST(test_view_reshape_keeps_offset) {
    /* Rows 1..2 of a 4x3 are contiguous but start at element 3. */
    mrt_tensor base = {0}, rows = {0}, r = {0};
    TU_ALLOC(&base, MRT_F32, 4, 3);
    tu_fill_iota(&base);
    TU_OK(mrt_view_narrow(&base, 0, 1, 2, &rows));
    ck_assert_int_eq(rows.offset, 3);
    TU_OK(mrt_view_reshape(&rows, TU_SHAPE(3, 2), &r));
    ck_assert_int_eq(r.offset, 3);
    TU_ASSERT_STRIDE(&r, 2, 1);
    for (int64_t i = 0; i < 6; i++) ck_assert(tu_get(&r, i) == (double)(3 + i));
    mrt_tensor_release(&r);
    mrt_tensor_release(&rows);
    mrt_tensor_release(&base);
}
END_TEST

START_TEST(test_view_reshape_mismatch) {
    mrt_tensor base = {0}, out = {0};
    TU_ALLOC(&base, MRT_F32, 2, 3);
    TU_FAILS(MRT_ERR_SHAPE, mrt_view_reshape(&base, TU_SHAPE(4, 2), &out));
    TU_MSG_HAS("2x3");
    TU_MSG_HAS("4x2");
    ck_assert_ptr_null(out.storage);
    TU_FAILS(MRT_ERR_SHAPE, mrt_tensor_reshape(&base, TU_SHAPE(7), &out));
    TU_MSG_HAS("2x3");
    ck_assert_ptr_null(out.storage);
    mrt_tensor_release(&base);
}
END_TEST

START_TEST(test_view_transpose) {
    mrt_tensor base = {0}, t = {0}, same = {0}, bad = {0};
    TU_ALLOC(&base, MRT_F32, 2, 3, 4);
    tu_fill_iota(&base);
    TU_OK(mrt_view_transpose(&base, 0, 2, &t));
    TU_ASSERT_SHAPE(&t, 4, 3, 2);
    TU_ASSERT_STRIDE(&t, 1, 4, 12);
    ck_assert_int_eq(t.offset, 0);
    ck_assert_ptr_eq(t.storage, base.storage);
    for (int64_t i = 0; i < 4; i++)
        for (int64_t j = 0; j < 3; j++)
            for (int64_t k = 0; k < 2; k++)
                ck_assert(tu_get_idx(&t, (int64_t[]){i, j, k}) == (double)(k * 12 + j * 4 + i));
    /* t[3][1][0] is base[0][1][3]. */
    int64_t idx[3] = {3, 1, 0};
    ((float *)t.storage->data)[tu_idx_offset(&t, idx)] = 100.0f;
    ck_assert(tu_get_idx(&base, (int64_t[]){0, 1, 3}) == 100.0);

    TU_OK(mrt_view_transpose(&base, 1, 1, &same));
    TU_ASSERT_STRIDE(&same, 12, 4, 1);

    TU_FAILS(MRT_ERR_INDEX, mrt_view_transpose(&base, 0, 3, &bad));
    TU_FAILS(MRT_ERR_INDEX, mrt_view_transpose(&base, -1, 1, &bad));
    ck_assert_ptr_null(bad.storage);

    mrt_tensor_release(&same);
    mrt_tensor_release(&t);
    mrt_tensor_release(&base);
}
END_TEST

START_TEST(test_view_permute) {
    mrt_tensor base = {0}, p = {0}, bad = {0};
    TU_ALLOC(&base, MRT_F32, 2, 3, 4);
    tu_fill_iota(&base);
    TU_OK(mrt_view_permute(&base, (int[]){2, 0, 1}, &p));
    TU_ASSERT_SHAPE(&p, 4, 2, 3);
    TU_ASSERT_STRIDE(&p, 1, 12, 4);
    ck_assert_ptr_eq(p.storage, base.storage);
    ck_assert(!mrt_tensor_is_contiguous(&p));
    for (int64_t i = 0; i < 4; i++)
        for (int64_t j = 0; j < 2; j++)
            for (int64_t k = 0; k < 3; k++)
                ck_assert(tu_get_idx(&p, (int64_t[]){i, j, k}) == (double)(j * 12 + k * 4 + i));
    tu_set(&p, 0, 55.0);
    ck_assert(tu_get(&base, 0) == 55.0);

    TU_FAILS_ANY(mrt_view_permute(&base, (int[]){0, 0, 1}, &bad));  /* repeated */
    TU_FAILS_ANY(mrt_view_permute(&base, (int[]){0, 1, 3}, &bad));  /* past ndim */
    TU_FAILS_ANY(mrt_view_permute(&base, (int[]){-1, 0, 1}, &bad)); /* negative */
    ck_assert_ptr_null(bad.storage);

    mrt_tensor_release(&p);
    mrt_tensor_release(&base);
}
END_TEST

START_TEST(test_view_narrow) {
    mrt_tensor base = {0}, cols = {0}, rows = {0}, both = {0}, bad = {0};
    TU_ALLOC(&base, MRT_F32, 4, 5);
    tu_fill_iota(&base);

    TU_OK(mrt_view_narrow(&base, 1, 1, 3, &cols));
    TU_ASSERT_SHAPE(&cols, 4, 3);
    TU_ASSERT_STRIDE(&cols, 5, 1);
    ck_assert_int_eq(cols.offset, 1);
    ck_assert_ptr_eq(cols.storage, base.storage);

    TU_OK(mrt_view_narrow(&base, 0, 2, 2, &rows));
    TU_ASSERT_SHAPE(&rows, 2, 5);
    ck_assert_int_eq(rows.offset, 10);

    /* Narrowing a narrowed view composes the offsets. */
    TU_OK(mrt_view_narrow(&cols, 0, 2, 2, &both));
    TU_ASSERT_SHAPE(&both, 2, 3);
    ck_assert_int_eq(both.offset, 11);
    for (int64_t i = 0; i < 2; i++)
        for (int64_t j = 0; j < 3; j++)
            ck_assert(tu_get_idx(&both, (int64_t[]){i, j}) == (double)((i + 2) * 5 + j + 1));
    tu_set(&both, 5, -1.0); /* both[1][2] == base[3][3] */
    ck_assert(tu_get_idx(&base, (int64_t[]){3, 3}) == -1.0);

    TU_FAILS(MRT_ERR_INDEX, mrt_view_narrow(&base, 1, 3, 3, &bad));  /* runs past the end */
    TU_FAILS(MRT_ERR_INDEX, mrt_view_narrow(&base, 1, -1, 2, &bad)); /* negative start */
    TU_FAILS(MRT_ERR_INDEX, mrt_view_narrow(&base, 0, 5, 1, &bad));  /* start past the end */
    TU_FAILS(MRT_ERR_INDEX, mrt_view_narrow(&base, 2, 0, 1, &bad));  /* no such dim */
    TU_FAILS_ANY(mrt_view_narrow(&base, 0, 0, -1, &bad));            /* negative length */
    ck_assert_ptr_null(bad.storage);

    mrt_tensor_release(&both);
    mrt_tensor_release(&rows);
    mrt_tensor_release(&cols);
    mrt_tensor_release(&base);
}
END_TEST

START_TEST(test_view_select) {
    mrt_tensor base = {0}, s = {0}, row = {0}, elem = {0}, bad = {0};
    TU_ALLOC(&base, MRT_F32, 3, 4, 5);
    tu_fill_iota(&base);

    TU_OK(mrt_view_select(&base, 1, 2, &s));
    TU_ASSERT_SHAPE(&s, 3, 5);
    TU_ASSERT_STRIDE(&s, 20, 1);
    ck_assert_int_eq(s.offset, 10);
    ck_assert_ptr_eq(s.storage, base.storage);
    for (int64_t i = 0; i < 3; i++)
        for (int64_t k = 0; k < 5; k++)
            ck_assert(tu_get_idx(&s, (int64_t[]){i, k}) == (double)(i * 20 + 2 * 5 + k));
    tu_set(&s, 7, -3.0); /* s[1][2] == base[1][2][2] */
    ck_assert(tu_get_idx(&base, (int64_t[]){1, 2, 2}) == -3.0);

    /* Selecting down to one element gives a 0-d view. */
    TU_OK(mrt_view_select(&base, 0, 2, &row));
    mrt_tensor r2 = {0};
    TU_OK(mrt_view_select(&row, 0, 3, &r2));
    TU_OK(mrt_view_select(&r2, 0, 4, &elem));
    ck_assert_int_eq(elem.ndim, 0);
    ck_assert_int_eq(elem.offset, 2 * 20 + 3 * 5 + 4);
    ck_assert(mrt_f32(&elem)[0] == 59.0f);

    TU_FAILS(MRT_ERR_INDEX, mrt_view_select(&base, 1, 4, &bad));
    TU_FAILS(MRT_ERR_INDEX, mrt_view_select(&base, 1, -1, &bad));
    TU_FAILS(MRT_ERR_INDEX, mrt_view_select(&base, 3, 0, &bad));
    TU_FAILS_ANY(mrt_view_select(&elem, 0, 0, &bad)); /* nothing to select from a 0-d */
    ck_assert_ptr_null(bad.storage);

    mrt_tensor_release(&elem);
    mrt_tensor_release(&r2);
    mrt_tensor_release(&row);
    mrt_tensor_release(&s);
    mrt_tensor_release(&base);
}
END_TEST

START_TEST(test_view_expand) {
    mrt_tensor col = {0}, e = {0}, vec = {0}, e3 = {0}, sc = {0}, es = {0}, bad = {0};
    TU_ALLOC(&col, MRT_F32, 3, 1);
    tu_fill_iota(&col);
    TU_OK(mrt_view_expand(&col, TU_SHAPE(3, 4), &e));
    TU_ASSERT_SHAPE(&e, 3, 4);
    TU_ASSERT_STRIDE(&e, 1, 0);
    ck_assert_ptr_eq(e.storage, col.storage);
    for (int64_t i = 0; i < 3; i++)
        for (int64_t j = 0; j < 4; j++)
            ck_assert(tu_get_idx(&e, (int64_t[]){i, j}) == (double)i);
    /* Every column aliases the same base element. */
    tu_set(&e, 1 * 4 + 3, 42.0);
    ck_assert(tu_get(&col, 1) == 42.0);
    ck_assert(tu_get_idx(&e, (int64_t[]){1, 0}) == 42.0);

    /* New leading dims broadcast too (numpy rules). */
    TU_ALLOC(&vec, MRT_F32, 4);
    tu_fill_iota(&vec);
    TU_OK(mrt_view_expand(&vec, TU_SHAPE(2, 3, 4), &e3));
    TU_ASSERT_SHAPE(&e3, 2, 3, 4);
    TU_ASSERT_STRIDE(&e3, 0, 0, 1);
    for (int64_t i = 0; i < 24; i++) ck_assert(tu_get(&e3, i) == (double)(i % 4));

    tu_alloc_scalar(&sc, MRT_F32);
    mrt_f32(&sc)[0] = 5.0f;
    TU_OK(mrt_view_expand(&sc, TU_SHAPE(2, 3), &es));
    TU_ASSERT_STRIDE(&es, 0, 0);
    for (int64_t i = 0; i < 6; i++) ck_assert(tu_get(&es, i) == 5.0);

    TU_FAILS_ANY(mrt_view_expand(&col, TU_SHAPE(3, 2, 4), &bad)); /* 3 cannot become 2 */
    TU_FAILS_ANY(mrt_view_expand(&e, TU_SHAPE(2, 4), &bad));      /* non-1 dim 3 -> 2 */
    TU_FAILS_ANY(mrt_view_expand(&vec, TU_SHAPE(3, 5), &bad));    /* 4 -> 5 */
    TU_FAILS_ANY(mrt_view_expand(&col, TU_SHAPE(4), &bad));       /* fewer dims */
    TU_FAILS_ANY(mrt_view_expand(&vec, TU_SHAPE(-2, 4), &bad));   /* negative new dim */
    ck_assert_ptr_null(bad.storage);

    mrt_tensor_release(&es);
    mrt_tensor_release(&sc);
    mrt_tensor_release(&e3);
    mrt_tensor_release(&vec);
    mrt_tensor_release(&e);
    mrt_tensor_release(&col);
}
END_TEST

START_TEST(test_tensor_reshape_copies_noncontiguous) {
    mrt_tensor base = {0}, tr = {0}, r = {0}, v = {0};
    TU_ALLOC(&base, MRT_F32, 3, 4);
    tu_fill_iota(&base);
    TU_OK(mrt_view_transpose(&base, 0, 1, &tr));
    TU_OK(mrt_tensor_reshape(&tr, TU_SHAPE(2, 6), &r));
    ck_assert_ptr_ne(r.storage, base.storage);
    TU_ASSERT_SHAPE(&r, 2, 6);
    TU_ASSERT_STRIDE(&r, 6, 1);
    /* Row-major order of the transposed view: 0 4 8 1 5 9 2 6 10 ... */
    for (int64_t i = 0; i < 12; i++) ck_assert(tu_get(&r, i) == (double)((i % 3) * 4 + i / 3));
    tu_set(&r, 0, -1.0);
    ck_assert(tu_get(&base, 0) == 0.0);

    /* Contiguous input: a view, sharing storage. */
    TU_OK(mrt_tensor_reshape(&base, TU_SHAPE(12), &v));
    ck_assert_ptr_eq(v.storage, base.storage);
    tu_set(&v, 11, -2.0);
    ck_assert(tu_get(&base, 11) == -2.0);

    mrt_tensor_release(&v);
    mrt_tensor_release(&r);
    mrt_tensor_release(&tr);
    mrt_tensor_release(&base);
}
END_TEST

START_TEST(test_contiguous) {
    mrt_tensor base = {0}, same = {0}, tr = {0}, c = {0};
    TU_ALLOC(&base, MRT_F32, 2, 3);
    tu_fill_iota(&base);

    TU_OK(mrt_tensor_contiguous(&base, &same));
    ck_assert_ptr_eq(same.storage, base.storage);
    ck_assert_int_eq(base.storage->refcount, 2);

    TU_OK(mrt_view_transpose(&base, 0, 1, &tr));
    TU_OK(mrt_tensor_contiguous(&tr, &c));
    ck_assert_ptr_ne(c.storage, base.storage);
    TU_ASSERT_SHAPE(&c, 3, 2);
    TU_ASSERT_STRIDE(&c, 2, 1);
    ck_assert(mrt_tensor_is_contiguous(&c));
    ck_assert(tu_max_abs_diff(&c, &tr) == 0.0);

    mrt_tensor_release(&c);
    mrt_tensor_release(&tr);
    mrt_tensor_release(&same);
    mrt_tensor_release(&base);
}
END_TEST

START_TEST(test_index_offset) {
    mrt_tensor base = {0}, v = {0};
    TU_ALLOC(&base, MRT_F32, 3, 4);
    TU_OK(mrt_view_narrow(&base, 1, 1, 3, &v)); /* 3x3, offset 1, strides 4,1 */
    int64_t off = -1;
    TU_OK(mrt_tensor_index_offset(&v, 2, (int64_t[]){2, 1}, &off));
    ck_assert_int_eq(off, 1 + 2 * 4 + 1);
    TU_OK(mrt_tensor_index_offset(&base, 2, (int64_t[]){2, 3}, &off));
    ck_assert_int_eq(off, 11);

    TU_FAILS(MRT_ERR_INDEX, mrt_tensor_index_offset(&v, 2, (int64_t[]){3, 0}, &off));
    TU_FAILS(MRT_ERR_INDEX, mrt_tensor_index_offset(&v, 2, (int64_t[]){0, 3}, &off));
    TU_FAILS(MRT_ERR_INDEX, mrt_tensor_index_offset(&v, 2, (int64_t[]){0, -1}, &off));
    TU_FAILS_ANY(mrt_tensor_index_offset(&v, 1, (int64_t[]){0}, &off));       /* too few */
    TU_FAILS_ANY(mrt_tensor_index_offset(&v, 3, (int64_t[]){0, 0, 0}, &off)); /* too many */

    mrt_tensor_release(&v);
    mrt_tensor_release(&base);
}
END_TEST

/* ---- data movement ------------------------------------------------------------ */

START_TEST(test_copy_broadcast) {
    mrt_tensor dst = {0}, row = {0}, col = {0}, sc = {0}, tr = {0}, bad = {0};
    TU_ALLOC(&dst, MRT_F32, 3, 4);
    TU_ALLOC(&row, MRT_F32, 4);
    TU_ALLOC(&col, MRT_F32, 3, 1);
    tu_fill_iota(&row);
    tu_fill_iota(&col);

    TU_OK(mrt_tensor_copy(&dst, &row));
    for (int64_t i = 0; i < 12; i++) ck_assert(tu_get(&dst, i) == (double)(i % 4));
    TU_OK(mrt_tensor_copy(&dst, &col));
    for (int64_t i = 0; i < 12; i++) ck_assert(tu_get(&dst, i) == (double)(i / 4));

    tu_alloc_scalar(&sc, MRT_F32);
    mrt_f32(&sc)[0] = 2.5f;
    TU_OK(mrt_tensor_copy(&dst, &sc));
    for (int64_t i = 0; i < 12; i++) ck_assert(tu_get(&dst, i) == 2.5);

    /* Into a non-contiguous destination: only logical positions matter. */
    TU_OK(mrt_view_transpose(&dst, 0, 1, &tr)); /* 4x3 */
    mrt_tensor src = {0};
    TU_ALLOC(&src, MRT_F32, 4, 3);
    tu_fill_iota(&src);
    TU_OK(mrt_tensor_copy(&tr, &src));
    for (int64_t i = 0; i < 3; i++)
        for (int64_t j = 0; j < 4; j++)
            ck_assert(tu_get_idx(&dst, (int64_t[]){i, j}) == (double)(j * 3 + i));

    TU_ALLOC(&bad, MRT_F32, 3);
    TU_FAILS(MRT_ERR_SHAPE, mrt_tensor_copy(&dst, &bad));
    TU_MSG_HAS("3x4");
    /* src must broadcast *to* dst: a bigger src is not allowed. */
    mrt_tensor big = {0};
    TU_ALLOC(&big, MRT_F32, 2, 3, 4);
    TU_FAILS(MRT_ERR_SHAPE, mrt_tensor_copy(&dst, &big));

    mrt_tensor_release(&big);
    mrt_tensor_release(&bad);
    mrt_tensor_release(&src);
    mrt_tensor_release(&tr);
    mrt_tensor_release(&sc);
    mrt_tensor_release(&col);
    mrt_tensor_release(&row);
    mrt_tensor_release(&dst);
}
END_TEST

START_TEST(test_copy_dtype_conversion) {
    mrt_tensor f = {0}, i = {0}, back = {0}, irow = {0}, fb = {0};
    TU_ALLOC(&f, MRT_F32, 2, 3);
    TU_ALLOC(&i, MRT_I64, 2, 3);
    TU_ALLOC(&back, MRT_F32, 2, 3);
    /* Integral values only: the header does not say whether float->int64
     * truncates or rounds. 2^24 is the largest power of two floats hold
     * exactly along with its neighbours below. */
    const double vals[6] = {0.0, -3.0, 7.0, 16777216.0, -16777215.0, 1.0};
    for (int64_t k = 0; k < 6; k++) tu_set(&f, k, vals[k]);
    TU_OK(mrt_tensor_copy(&i, &f));
    for (int64_t k = 0; k < 6; k++) ck_assert(mrt_i64(&i)[k] == (int64_t)vals[k]);
    TU_OK(mrt_tensor_copy(&back, &i));
    ck_assert(tu_max_abs_diff(&back, &f) == 0.0);

    /* Conversion and broadcasting together. */
    TU_ALLOC(&irow, MRT_I64, 3);
    for (int64_t k = 0; k < 3; k++) mrt_i64(&irow)[k] = 10 * (k + 1);
    TU_ALLOC(&fb, MRT_F32, 2, 3);
    TU_OK(mrt_tensor_copy(&fb, &irow));
    for (int64_t k = 0; k < 6; k++) ck_assert(tu_get(&fb, k) == (double)(10 * (k % 3 + 1)));

    mrt_tensor_release(&fb);
    mrt_tensor_release(&irow);
    mrt_tensor_release(&back);
    mrt_tensor_release(&i);
    mrt_tensor_release(&f);
}
END_TEST

START_TEST(test_fill) {
    mrt_tensor base = {0}, v = {0}, iv = {0};
    TU_ALLOC(&base, MRT_F32, 3, 4);
    TU_OK(mrt_view_narrow(&base, 1, 1, 2, &v));
    TU_OK(mrt_tensor_fill(&v, -1.25));
    /* Only the view's elements change, gaps untouched. */
    for (int64_t r = 0; r < 3; r++)
        for (int64_t c = 0; c < 4; c++)
            ck_assert(tu_get_idx(&base, (int64_t[]){r, c}) == ((c == 1 || c == 2) ? -1.25 : 0.0));

    TU_ALLOC(&iv, MRT_I64, 5);
    TU_OK(mrt_tensor_fill(&iv, 7.0));
    for (int64_t k = 0; k < 5; k++) ck_assert_int_eq(mrt_i64(&iv)[k], 7);
    TU_OK(mrt_tensor_fill(&iv, -4.0));
    for (int64_t k = 0; k < 5; k++) ck_assert_int_eq(mrt_i64(&iv)[k], -4);

    mrt_tensor_release(&iv);
    mrt_tensor_release(&v);
    mrt_tensor_release(&base);
}
END_TEST

START_TEST(test_fill_range) {
    mrt_tensor t = {0}, base = {0}, tr = {0}, it = {0};
    TU_ALLOC(&t, MRT_F32, 2, 3);
    TU_OK(mrt_tensor_fill_range(&t, 1.0, 0.5));
    for (int64_t k = 0; k < 6; k++) ck_assert(tu_get(&t, k) == 1.0 + 0.5 * (double)k);

    /* On a view the sequence follows the view's own row-major order. */
    TU_ALLOC(&base, MRT_F32, 2, 3);
    TU_OK(mrt_view_transpose(&base, 0, 1, &tr)); /* 3x2 */
    TU_OK(mrt_tensor_fill_range(&tr, 0.0, 1.0));
    for (int64_t k = 0; k < 6; k++) ck_assert(tu_get(&tr, k) == (double)k);
    ck_assert(tu_get_idx(&base, (int64_t[]){1, 0}) == 1.0);
    ck_assert(tu_get_idx(&base, (int64_t[]){0, 1}) == 2.0);

    TU_ALLOC(&it, MRT_I64, 4);
    TU_OK(mrt_tensor_fill_range(&it, 10.0, -3.0));
    for (int64_t k = 0; k < 4; k++) ck_assert_int_eq(mrt_i64(&it)[k], 10 - 3 * k);

    mrt_tensor_release(&it);
    mrt_tensor_release(&tr);
    mrt_tensor_release(&base);
    mrt_tensor_release(&t);
}
END_TEST

START_TEST(test_shape_str) {
    char buf[MRT_SHAPE_STRLEN];
    ck_assert_str_eq(mrt_shape_str(2, (int64_t[]){2, 3}, buf, sizeof buf), "2x3");
    ck_assert_ptr_eq(mrt_shape_str(2, (int64_t[]){2, 3}, buf, sizeof buf), buf);
    ck_assert_str_eq(mrt_shape_str(1, (int64_t[]){5}, buf, sizeof buf), "5");
    ck_assert_str_eq(mrt_shape_str(3, (int64_t[]){1, 1, 7}, buf, sizeof buf), "1x1x7");
    ck_assert_str_eq(mrt_shape_str(0, (int64_t[]){1}, buf, sizeof buf), "scalar");
    ck_assert_str_eq(mrt_shape_str(2, (int64_t[]){123456789012LL, 2}, buf, sizeof buf),
                     "123456789012x2");
    int64_t full[MRT_MAX_DIMS];
    for (int d = 0; d < MRT_MAX_DIMS; d++) full[d] = 1000000000000LL;
    mrt_shape_str(MRT_MAX_DIMS, full, buf, sizeof buf); /* worst case must fit */
    ck_assert_uint_eq(strlen(buf), 8 * 13 + 7);

    /* A short buffer must not be overrun, whatever gets truncated. */
    char small[16];
    memset(small, '#', sizeof small);
    mrt_shape_str(3, (int64_t[]){100, 200, 300}, small, 5);
    ck_assert_msg(memchr(small, '\0', 5) != NULL, "result not terminated within len");
    for (size_t k = 5; k < sizeof small; k++) ck_assert_int_eq(small[k], '#');
}
END_TEST

int main(void) {
    Suite *s = suite_create("tensor");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_fail_records_message);
    tcase_add_test(tc, test_storage_refcount);
    tcase_add_test(tc, test_alloc_zero_filled_contiguous);
    tcase_add_test(tc, test_alloc_invalid_shape);
    tcase_add_test(tc, test_alloc_int64);
    tcase_add_test(tc, test_scalar_0d);
    tcase_add_test(tc, test_numel_and_contiguity);
    tcase_add_test(tc, test_release_idempotent);
    tcase_add_test(tc, test_share_refcount);
    tcase_add_test(tc, test_clone_noncontiguous);
    tcase_add_test(tc, test_clone_int64);
    tcase_add_test(tc, test_view_reshape);
    tcase_add_test(tc, test_view_reshape_keeps_offset);
    tcase_add_test(tc, test_view_reshape_mismatch);
    tcase_add_test(tc, test_view_transpose);
    tcase_add_test(tc, test_view_permute);
    tcase_add_test(tc, test_view_narrow);
    tcase_add_test(tc, test_view_select);
    tcase_add_test(tc, test_view_expand);
    tcase_add_test(tc, test_tensor_reshape_copies_noncontiguous);
    tcase_add_test(tc, test_contiguous);
    tcase_add_test(tc, test_index_offset);
    tcase_add_test(tc, test_copy_broadcast);
    tcase_add_test(tc, test_copy_dtype_conversion);
    tcase_add_test(tc, test_fill);
    tcase_add_test(tc, test_fill_range);
    tcase_add_test(tc, test_shape_str);
    suite_add_tcase(s, tc);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
