// An embedding C++ service in miniature, built against an installed cgrad: it saves a model,
// loads it back from the file, serves cg_model_predict from several threads at once and
// checks every answer against a float64 forward pass computed here from the loaded weights.
// Bad requests must come back as statuses with a message. Exit 0 only when all of that holds.
#include <cgrad.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

namespace {

int failures = 0;

void fail(const std::string &what) {
    std::fprintf(stderr, "consumer: %s\n", what.c_str());
    failures++;
}

bool ok(cg_status s, const char *call) {
    if (s == CG_OK) return true;
    fail(std::string(call) + ": " + cg_status_str(s) + ": " + cg_last_error());
    return false;
}

std::vector<float> host(const cg_tensor *t) {
    std::vector<float> v((size_t)cg_tensor_numel(t));
    if (!ok(cg_tensor_to_host(t, v.data(), v.size() * sizeof(float)), "cg_tensor_to_host")) v.clear();
    return v;
}

const int64_t kIn = 5, kHidden = 8, kOut = 3, kRows = 7;

} // namespace

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: consumer <scratch dir>\n");
        return 2;
    }
    if (cg_version() != CG_VERSION || std::string(cg_version_string()).empty()) {
        fail("the library is version " + std::to_string(cg_version()) + ", its installed header says " +
             std::to_string(CG_VERSION));
        return 1;
    }
    const std::string path = std::string(argv[1]) + "/model.safetensors";
    const uint64_t seed = (uint64_t)std::time(nullptr);

    cg_model *trained = nullptr;
    if (!ok(cg_model_create(CG_CPU, CG_F32, seed, &trained), "cg_model_create")) return 1;
    if (!ok(cg_model_add_dense(trained, kIn, kHidden, CG_ACT_RELU), "cg_model_add_dense") ||
        !ok(cg_model_add_dense(trained, kHidden, kOut, CG_ACT_NONE), "cg_model_add_dense") ||
        !ok(cg_model_save(trained, path.c_str()), "cg_model_save"))
        return 1;
    cg_model_free(trained);

    cg_model *m = nullptr;
    if (!ok(cg_model_load(path.c_str(), CG_CPU, &m), "cg_model_load")) return 1;
    cg_model_eval(m);

    // the float64 reference: y = W2 relu(W1 x + b1) + b2 from the loaded weights
    cg_tensor *p[4];
    const char *names[4];
    int np = 0;
    if (!ok(cg_model_parameters(m, p, names, 4, &np), "cg_model_parameters")) return 1;
    if (np != 4) {
        fail("expected 4 parameter tensors, got " + std::to_string(np));
        return 1;
    }
    std::vector<float> w1 = host(p[0]), b1 = host(p[1]), w2 = host(p[2]), b2 = host(p[3]);

    cg_rng rng = cg_rng_make(seed ^ 0x9e3779b97f4a7c15ull);
    const int64_t xshape[2] = {kRows, kIn};
    cg_tensor *x = nullptr;
    if (!ok(cg_tensor_rand_uniform(xshape, 2, CG_F32, CG_CPU, -2.0, 2.0, &rng, &x), "cg_tensor_rand_uniform"))
        return 1;
    std::vector<float> xv = host(x);
    std::vector<double> want((size_t)(kRows * kOut));
    for (int64_t r = 0; r < kRows; r++) {
        double h[kHidden];
        for (int64_t j = 0; j < kHidden; j++) {
            double s = b1[(size_t)j];
            for (int64_t k = 0; k < kIn; k++) s += (double)w1[(size_t)(j * kIn + k)] * xv[(size_t)(r * kIn + k)];
            h[j] = s > 0 ? s : 0;
        }
        for (int64_t o = 0; o < kOut; o++) {
            double s = b2[(size_t)o];
            for (int64_t j = 0; j < kHidden; j++) s += (double)w2[(size_t)(o * kHidden + j)] * h[j];
            want[(size_t)(r * kOut + o)] = s;
        }
    }

    // several threads predict on the one model at once; each answer must match the reference
    const int kThreads = 4, kCalls = 50;
    std::vector<std::string> errors(kThreads);
    std::vector<std::thread> pool;
    for (int t = 0; t < kThreads; t++) {
        pool.emplace_back([&, t] {
            for (int c = 0; c < kCalls && errors[t].empty(); c++) {
                cg_tensor *y = nullptr;
                cg_status s = cg_model_predict(m, x, &y);
                if (s != CG_OK) {
                    errors[t] = std::string("cg_model_predict: ") + cg_last_error();
                    break;
                }
                std::vector<float> got((size_t)cg_tensor_numel(y));
                if (cg_tensor_ndim(y) != 2 || cg_tensor_dim(y, 0) != kRows || cg_tensor_dim(y, 1) != kOut ||
                    cg_tensor_to_host(y, got.data(), got.size() * sizeof(float)) != CG_OK) {
                    errors[t] = "prediction has the wrong shape or could not be read";
                } else {
                    for (size_t i = 0; i < got.size(); i++) {
                        double tol = 1e-5 + 1e-5 * std::fabs(want[i]);
                        if (!(std::fabs(got[i] - want[i]) <= tol)) { // NaN fails too
                            errors[t] = "element " + std::to_string(i) + " is " + std::to_string(got[i]) +
                                        ", want " + std::to_string(want[i]);
                            break;
                        }
                    }
                }
                cg_tensor_release(y);
            }
        });
    }
    for (std::thread &th : pool) th.join();
    for (const std::string &e : errors)
        if (!e.empty()) fail(e);

    // bad requests: statuses with a message, the process and the model untouched
    const int64_t bad_shape[2] = {kRows, kIn + 1};
    cg_tensor *bad = nullptr, *y = nullptr;
    if (ok(cg_tensor_zeros(bad_shape, 2, CG_F32, CG_CPU, &bad), "cg_tensor_zeros")) {
        cg_status s = cg_model_predict(m, bad, &y);
        if (s != CG_E_SHAPE || std::strlen(cg_last_error()) == 0)
            fail(std::string("predict on 6 features: want CG_E_SHAPE with a message, got ") + cg_status_str(s));
    }
    cg_model *none = nullptr;
    cg_status s = cg_model_load((std::string(argv[1]) + "/absent.safetensors").c_str(), CG_CPU, &none);
    if (s != CG_E_IO || std::strlen(cg_last_error()) == 0)
        fail(std::string("loading an absent file: want CG_E_IO with a message, got ") + cg_status_str(s));

    cg_tensor_release(bad);
    cg_tensor_release(x);
    cg_model_free(m);
    if (failures == 0) std::printf("consumer: ok (%d threads x %d predictions)\n", kThreads, kCalls);
    return failures == 0 ? 0 : 1;
}
