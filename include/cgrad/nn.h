/* cgrad: layers, sequential models, initialisation, losses and metrics.
 *
 * A cg_model is a sequential stack of layers (like torch.nn.Sequential / keras.Sequential).
 * Declare it layer by layer, then use it; the parameters are allocated and initialised on
 * first use (or by cg_model_build), when the activation after each Linear is known, so the
 * default initialisation can follow it (He for the ReLU family, Xavier for tanh/sigmoid).
 *
 * All parameters of a model live in one contiguous buffer and all their gradients in
 * another; each parameter is a view into it, so one optimizer launch updates everything.
 * Names follow a PyTorch nn.Sequential state_dict: "0.weight", "0.bias",
 * "2.running_mean", "2.running_var", "2.num_batches_tracked", ... where the number is the
 * layer index (activations and dropout count as layers, as in PyTorch). */
#ifndef CGRAD_NN_H
#define CGRAD_NN_H

#include <stdio.h>

#include "io.h"
#include "ops.h"
#include "tensor.h"

CG_EXTERN_C_BEGIN

typedef struct cg_model cg_model;

/* ---- initialisation ---- */
typedef enum cg_init {
    CG_INIT_AUTO = 0,       /* by the activation that follows: He normal for relu/leaky_relu/gelu,
                             * Xavier uniform for tanh/sigmoid/none (Keras' default) */
    CG_INIT_HE_NORMAL,      /* N(0, gain^2 / fan_in), gain = sqrt(2) (sqrt(2/(1+a^2)) for leaky relu) */
    CG_INIT_HE_UNIFORM,     /* U(-b, b), b = gain * sqrt(3 / fan_in) */
    CG_INIT_XAVIER_NORMAL,  /* N(0, 2 / (fan_in + fan_out)) */
    CG_INIT_XAVIER_UNIFORM, /* U(-b, b), b = sqrt(6 / (fan_in + fan_out)) */
    CG_INIT_COUNT
} cg_init;

typedef enum cg_activation {
    CG_ACT_NONE = 0,
    CG_ACT_RELU,
    CG_ACT_LEAKY_RELU, /* negative slope: the layer's `alpha` (0.01 when 0 is passed) */
    CG_ACT_GELU,       /* exact (erf) form, like torch.nn.GELU() */
    CG_ACT_TANH,
    CG_ACT_SIGMOID,
    CG_ACT_COUNT
} cg_activation;

CG_API const char *cg_activation_name(cg_activation a); /* "relu", ...; "none" */
CG_API const char *cg_init_name(cg_init i);             /* "he_normal", ... */

typedef enum cg_layer_kind {
    CG_LAYER_LINEAR = 0,
    CG_LAYER_ACTIVATION,
    CG_LAYER_DROPOUT,
    CG_LAYER_BATCHNORM1D,
    CG_LAYER_LAYERNORM,
    CG_LAYER_FLATTEN,
    CG_LAYER_KIND_COUNT
} cg_layer_kind;

/* ---- building a model ---- */
/* An empty model. Parameters are f32 (or f64) on `dev`; `seed` drives initialisation and
 * dropout masks (Philox: the same seed gives the same numbers on every device). */
CG_API cg_status cg_model_create(cg_device dev, cg_dtype dtype, uint64_t seed, cg_model **out);
CG_API void cg_model_free(cg_model *m); /* NULL is fine */

/* y = x W^T + b, W (out, in) as in PyTorch; in_features 0 = the previous layer's width. */
CG_API cg_status cg_model_add_linear(cg_model *m, int64_t in_features, int64_t out_features, int bias, cg_init init);
/* alpha: negative slope for CG_ACT_LEAKY_RELU, ignored otherwise. */
CG_API cg_status cg_model_add_activation(cg_model *m, cg_activation act, double alpha);
CG_API cg_status cg_model_add_dropout(cg_model *m, double p);
/* BatchNorm1d(features, eps=1e-5, momentum=0.1) in PyTorch terms; 0 picks those defaults. */
CG_API cg_status cg_model_add_batchnorm1d(cg_model *m, int64_t features, double eps, double momentum);
CG_API cg_status cg_model_add_layernorm(cg_model *m, int64_t features, double eps);
/* (N, d1, d2, ...) -> (N, d1*d2*...). */
CG_API cg_status cg_model_add_flatten(cg_model *m);
/* Keras' Dense(units, activation): a Linear followed by the activation layer (none: only
 * the Linear), with the default initialisation for that activation. */
CG_API cg_status cg_model_add_dense(cg_model *m, int64_t in_features, int64_t units, cg_activation act);

/* Allocates and initialises the parameters (done implicitly on first use). After it the
 * layer list is fixed. */
CG_API cg_status cg_model_build(cg_model *m);

/* ---- properties ---- */
CG_API int cg_model_layer_count(const cg_model *m);
CG_API cg_layer_kind cg_model_layer_kind(const cg_model *m, int i);
CG_API int64_t cg_model_param_count(const cg_model *m); /* trainable numbers (builds the model) */
CG_API cg_device cg_model_device(const cg_model *m);
CG_API cg_dtype cg_model_dtype(const cg_model *m);
/* Input width expected by the first Linear/norm layer (0 when unknown), output width. */
CG_API int64_t cg_model_in_features(const cg_model *m);
CG_API int64_t cg_model_out_features(const cg_model *m);
/* A one-line description: "linear(784,512) batchnorm1d(512) relu dropout(0.3) ..." and the
 * Keras-style summary table on `fp`. */
CG_API cg_status cg_model_describe(const cg_model *m, char *buf, size_t n);
CG_API cg_status cg_model_summary(cg_model *m, FILE *fp);

/* Trainable parameter tensors in state-dict order (borrowed; valid until the model is moved
 * or freed). *n receives the count; params may be NULL to query it. */
CG_API cg_status cg_model_parameters(cg_model *m, cg_tensor **params, const char **names, int cap, int *n);
/* The flat parameter and gradient buffers every parameter is a view of (borrowed). */
CG_API cg_tensor *cg_model_flat_params(cg_model *m);
CG_API cg_tensor *cg_model_flat_grads(cg_model *m);

/* ---- modes and devices ---- */
/* Training mode (default) uses batch statistics in BatchNorm and drops units in Dropout;
 * eval mode uses running statistics and no dropout. */
CG_API void cg_model_train(cg_model *m);
CG_API void cg_model_eval(cg_model *m);
CG_API int cg_model_is_training(const cg_model *m);
/* Moves parameters, gradients, buffers (and the compiled optimizer's state) to dev. */
CG_API cg_status cg_model_to(cg_model *m, cg_device dev);

/* ---- running ---- */
/* Forward pass in the current mode, recording the graph when grad mode is on. x is moved
 * to the model's device when it lives elsewhere. In training mode this updates BatchNorm
 * running statistics and the dropout stream. */
CG_API cg_status cg_model_forward(cg_model *m, const cg_tensor *x, cg_tensor **y);
/* Thread-safe inference: eval-mode forward under no_grad, reading but never writing the
 * model (any number of threads may call it on one built model at once, while no thread
 * trains or moves it). y lands on the model's device. */
CG_API cg_status cg_model_predict(const cg_model *m, const cg_tensor *x, cg_tensor **y);
CG_API cg_status cg_model_zero_grad(cg_model *m);

/* Gradient norms after backward, one per parameter tensor in state-dict order. */
typedef struct cg_grad_norm {
    char name[48];
    double norm;
} cg_grad_norm;
CG_API cg_status cg_model_grad_norms(cg_model *m, cg_grad_norm *out, int cap, int *n);
/* ||all gradients||_2 */
CG_API cg_status cg_model_grad_global_norm(cg_model *m, double *norm);

/* ---- weights ---- */
/* Inference of the dropout/init stream: (seed, offset) of the model's Philox stream. */
CG_API cg_rng cg_model_rng(const cg_model *m);
CG_API void cg_model_set_rng(cg_model *m, cg_rng rng);
/* The architecture as a string ("v1;linear:784:512:1;batchnorm1d:512:1e-05:0.1;relu;...");
 * cg_model_from_arch rebuilds an (uninitialised, re-seeded) model from it. */
CG_API cg_status cg_model_arch(const cg_model *m, char *buf, size_t n);
CG_API cg_status cg_model_from_arch(const char *arch, cg_device dev, cg_dtype dtype, uint64_t seed, cg_model **out);

/* A dict name -> tensor of every parameter and buffer (PyTorch names). The tensors are
 * copies on the CPU, safe to keep and save. */
CG_API cg_status cg_model_state_dict(cg_model *m, cg_state_dict **out);
/* Copies values from sd; every expected tensor must be present with its shape (strict,
 * extra tensors are refused unless their name has a prefix such as "optimizer."). */
CG_API cg_status cg_model_load_state_dict(cg_model *m, const cg_state_dict *sd);
/* Weights (safetensors, atomic) with the architecture in the metadata ("cgrad.arch"). */
CG_API cg_status cg_model_save(cg_model *m, const char *path);
/* Rebuilds a model from a file written by cg_model_save, on dev. */
CG_API cg_status cg_model_load(const char *path, cg_device dev, cg_model **out);

/* ---- losses and metrics ---- */
typedef enum cg_loss_kind {
    CG_LOSS_MSE = 0,
    CG_LOSS_BCE_LOGITS,     /* binary cross-entropy on logits; targets in [0, 1], same shape */
    CG_LOSS_CROSS_ENTROPY,  /* categorical CE on logits (N, C) with integer labels (N) */
    CG_LOSS_COUNT
} cg_loss_kind;

typedef struct cg_loss_config {
    cg_loss_kind kind;
    cg_reduction reduction; /* MEAN (default) or SUM */
    double label_smoothing; /* cross-entropy only */
} cg_loss_config;

CG_API cg_loss_config cg_loss_config_default(cg_loss_kind kind);
CG_API const char *cg_loss_name(cg_loss_kind k); /* "mse", "bce_with_logits", "cross_entropy" */
CG_API cg_status cg_loss(const cg_loss_config *cfg, const cg_tensor *pred, const cg_tensor *target, cg_tensor **out);

/* Number of correct predictions in a batch (host-side): argmax vs integer labels for
 * (N, C) logits; logit > 0 vs target > 0.5 for BCE-shaped outputs ((N) or (N, 1)). */
CG_API cg_status cg_accuracy_count(const cg_tensor *pred, const cg_tensor *target, int64_t *correct, int64_t *total);
CG_API cg_status cg_accuracy(const cg_tensor *pred, const cg_tensor *target, double *acc);

CG_EXTERN_C_END
#endif
