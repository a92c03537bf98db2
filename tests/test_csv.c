/* CSV reader: header detection, label by name / index / none, quoting and CRLF, dtypes,
 * random tables written and read back, and every crafted bad file in tests/data/csv
 * (status, line, column and header name in the message). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgrad/io.h"
#include "cgt.h"

static cg_status load_str(const char *s, const cg_csv_opts *o, cg_tensor **x, cg_tensor **y) {
    return cg_csv_load_mem(s, strlen(s), "inline.csv", o, CG_CPU, x, y);
}

START_TEST(test_good_header_file) {
    char path[512];
    snprintf(path, sizeof path, "%s/csv/good_header.csv", cgt_data_dir());
    cg_tensor *x, *y;
    CGT_OK(cg_csv_load(path, NULL, CG_CPU, &x, &y)); /* defaults: auto header, last column, f32 / i64 */
    ck_assert_int_eq(cg_tensor_shape(x)[0], 3);
    ck_assert_int_eq(cg_tensor_shape(x)[1], 3);
    ck_assert_int_eq(cg_tensor_dtype(x), CG_F32);
    ck_assert_int_eq(cg_tensor_dtype(y), CG_I64);
    const float *px = cg_tensor_data(x);
    const float wx[9] = {5.1f, 3.5f, 1.4f, 4.9f, 3.0f, 1.4f, 6.2f, -3.4e-1f, 5.4f};
    for (int i = 0; i < 9; i++) ck_assert_float_eq(px[i], wx[i]);
    const int64_t *py = cg_tensor_data(y);
    ck_assert_int_eq(py[0], 0);
    ck_assert_int_eq(py[1], 1);
    ck_assert_int_eq(py[2], 2);
    cg_tensor_release(x);
    cg_tensor_release(y);
    /* label by (quoted) header name, f64 */
    cg_csv_opts o = cg_csv_opts_default();
    o.label_name = "width, cm";
    o.x_dtype = CG_F64;
    o.y_dtype = CG_F64;
    CGT_OK(cg_csv_load(path, &o, CG_CPU, &x, &y));
    ck_assert_int_eq(cg_tensor_shape(x)[1], 3);
    const double *dx = cg_tensor_data(x), *dy = cg_tensor_data(y);
    ck_assert_double_eq(dx[3], 4.9); /* row 1: sepal, petal, label */
    ck_assert_double_eq(dx[5], 1.0);
    ck_assert_double_eq(dy[2], 5.4);
    cg_tensor_release(x);
    cg_tensor_release(y);
    o.label_name = "nope";
    CGT_FAILS(cg_csv_load(path, &o, CG_CPU, &x, &y), CG_E_INVALID, path, "no column named 'nope'");
}
END_TEST

START_TEST(test_no_header_and_options) {
    char path[512];
    snprintf(path, sizeof path, "%s/csv/good_noheader.csv", cgt_data_dir());
    cg_tensor *x, *y;
    cg_csv_opts o = cg_csv_opts_default();
    o.label_index = 0;
    CGT_OK(cg_csv_load(path, &o, CG_CPU, &x, &y));
    ck_assert_int_eq(cg_tensor_shape(x)[0], 2); /* auto: all numeric -> no header */
    const float *px = cg_tensor_data(x);
    ck_assert_float_eq(px[0], 2.0f);
    ck_assert_float_eq(px[3], 6.0f);
    ck_assert_int_eq(((int64_t *)cg_tensor_data(y))[1], 4);
    cg_tensor_release(x);
    cg_tensor_release(y);
    o.header = CG_CSV_HEADER_YES; /* forced: first row becomes names */
    CGT_OK(cg_csv_load(path, &o, CG_CPU, &x, &y));
    ck_assert_int_eq(cg_tensor_shape(x)[0], 1);
    cg_tensor_release(x);
    cg_tensor_release(y);
    o = cg_csv_opts_default();
    o.has_label = 0;
    y = (cg_tensor *)(uintptr_t)1;
    CGT_OK(cg_csv_load(path, &o, CG_CPU, &x, &y));
    ck_assert_ptr_null(y);
    ck_assert_int_eq(cg_tensor_shape(x)[1], 3);
    cg_tensor_release(x);
    o = cg_csv_opts_default();
    o.label_name = "a";
    CGT_FAILS(cg_csv_load(path, &o, CG_CPU, &x, &y), CG_E_FORMAT, "label column 'a'", "not a header");
    o.label_name = NULL;
    o.label_index = 5;
    CGT_FAILS(cg_csv_load(path, &o, CG_CPU, &x, &y), CG_E_INVALID, "index 5", "3 columns");
    o = cg_csv_opts_default();
    o.delimiter = ';';
    CGT_OK(load_str("x;y\n1;2\n", &o, &x, &y));
    ck_assert_float_eq(((float *)cg_tensor_data(x))[0], 1.0f);
    cg_tensor_release(x);
    cg_tensor_release(y);
    o = cg_csv_opts_default();
    o.y_dtype = CG_I32;
    CGT_FAILS(load_str("a,b\n1,3000000000\n", &o, &x, &y), CG_E_FORMAT, "line 2, column 2 ('b')", "i32");
    CGT_FAILS(load_str("a,b\n1e39,3\n", NULL, &x, &y), CG_E_NUMERIC, "line 2, column 1 ('a')", "f32");
    CGT_FAILS(load_str("a,b\n0x10,3\n", NULL, &x, &y), CG_E_FORMAT, "'0x10' is not a number");
    CGT_FAILS(load_str("a,b\n\"1\"x,3\n", NULL, &x, &y), CG_E_FORMAT, "after the closing quote");
    /* BOM, CRLF, spaces around cells and blank lines */
    CGT_OK(load_str("\xEF\xBB\xBFp,q\r\n 1.5 , 2 \r\n\r\n\"-3\",4\r\n", NULL, &x, &y));
    ck_assert_int_eq(cg_tensor_shape(x)[0], 2);
    ck_assert_float_eq(((float *)cg_tensor_data(x))[1], -3.0f);
    cg_tensor_release(x);
    cg_tensor_release(y);
}
END_TEST

START_TEST(test_random_table) {
    cgt_rand r = cgt_rand_make("csv_random");
    int rows = (int)cgt_randint(&r, 1, 200), cols = (int)cgt_randint(&r, 2, 9);
    int label = (int)cgt_randint(&r, 0, cols);
    size_t cap = (size_t)rows * (size_t)cols * 32 + 256, n = 0;
    char *buf = malloc(cap);
    double *want = malloc((size_t)rows * (size_t)cols * sizeof *want);
    for (int j = 0; j < cols; j++) n += (size_t)snprintf(buf + n, cap - n, "%scol%d", j ? "," : "", j);
    n += (size_t)snprintf(buf + n, cap - n, "\n");
    for (int i = 0; i < rows; i++) {
        for (int j = 0; j < cols; j++) {
            double v = j == label ? (double)cgt_randint(&r, -5, 50) : cgt_normal(&r) * 1e3;
            want[i * cols + j] = v;
            n += (size_t)snprintf(buf + n, cap - n, "%s%.17g", j ? "," : "", v);
        }
        n += (size_t)snprintf(buf + n, cap - n, i % 3 ? "\n" : "\r\n");
    }
    cg_csv_opts o = cg_csv_opts_default();
    char lname[16];
    snprintf(lname, sizeof lname, "col%d", label);
    o.label_name = lname;
    o.x_dtype = CG_F64;
    cg_tensor *x, *y;
    CGT_OK(cg_csv_load_mem(buf, n, "rand.csv", &o, CG_CPU, &x, &y));
    ck_assert_int_eq(cg_tensor_shape(x)[0], rows);
    ck_assert_int_eq(cg_tensor_shape(x)[1], cols - 1);
    const double *px = cg_tensor_data(x);
    const int64_t *py = cg_tensor_data(y);
    for (int i = 0; i < rows; i++) {
        for (int j = 0, k = 0; j < cols; j++) {
            if (j == label) ck_assert_int_eq(py[i], (int64_t)want[i * cols + j]);
            else ck_assert_double_eq(px[i * (cols - 1) + k++], want[i * cols + j]); /* %.17g round-trips */
        }
    }
    cg_tensor_release(x);
    cg_tensor_release(y);
    free(buf);
    free(want);
}
END_TEST

static const cgt_bad_file bad_cases[] = {
    {"bad_cell.csv", CG_E_FORMAT, {"line 3, column 2 ('b')", "'x7' is not a number"}},
    {"nan_cell.csv", CG_E_NUMERIC, {"line 3, column 2 ('b')", "'nan' is not finite"}},
    {"ragged.csv", CG_E_FORMAT, {"line 4", "2 cells, expected 3"}},
    {"empty_cell.csv", CG_E_FORMAT, {"line 2, column 2 ('b')", "empty cell"}},
    {"unterminated_quote.csv", CG_E_FORMAT, {"line 2, column 2", "never closed"}},
    {"fractional_label.csv", CG_E_FORMAT, {"line 3, column 3 ('label')", "'1.5' is not an integer"}},
    {"empty.csv", CG_E_FORMAT, {"no rows"}},
    {"header_only.csv", CG_E_FORMAT, {"no data rows"}},
    {"huge_value.csv", CG_E_NUMERIC, {"line 2, column 2 ('b')", "'1e400' is out of range"}},
};

START_TEST(test_bad_files) {
    const cgt_bad_file *c = &bad_cases[_i];
    char path[512];
    snprintf(path, sizeof path, "%s/csv/%s", cgt_data_dir(), c->file);
    cg_tensor *sentinel = (cg_tensor *)(uintptr_t)0xc5f, *x = sentinel, *y = sentinel;
    CGT_FAILS(cg_csv_load(path, NULL, CG_CPU, &x, &y), c->status, path, c->kw[0], c->kw[1], c->kw[2]);
    ck_assert_ptr_eq(x, sentinel);
    ck_assert_ptr_eq(y, sentinel);
    snprintf(path, sizeof path, "%s/csv/missing.csv", cgt_data_dir());
    CGT_FAILS(cg_csv_load(path, NULL, CG_CPU, &x, &y), CG_E_IO, path, "cannot open");
}
END_TEST

START_TEST(test_every_truncation) {
    /* no prefix of a good file may crash; a cut inside a row is either a complete shorter
     * table or an error */
    char path[512];
    snprintf(path, sizeof path, "%s/csv/good_header.csv", cgt_data_dir());
    FILE *f = fopen(path, "rb");
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    for (size_t k = 0; k <= n; k++) {
        cg_tensor *x = NULL, *y = NULL;
        cg_status s = cg_csv_load_mem(buf, k, "cut", NULL, CG_CPU, &x, &y);
        if (s == CG_OK) {
            ck_assert_int_eq(cg_tensor_shape(x)[0], cg_tensor_shape(y)[0]);
            cg_tensor_release(x);
            cg_tensor_release(y);
        } else {
            ck_assert_ptr_null(x);
            ck_assert_ptr_nonnull(strstr(cg_last_error(), "cut"));
        }
    }
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("csv");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_good_header_file);
    tcase_add_test(tc, test_no_header_and_options);
    tcase_add_test(tc, test_random_table);
    tcase_add_loop_test(tc, test_bad_files, 0, (int)(sizeof bad_cases / sizeof bad_cases[0]));
    tcase_add_test(tc, test_every_truncation);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return cgt_run_suite(suite()); }
