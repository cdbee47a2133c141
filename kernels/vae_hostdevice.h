/* One macro so that a function in a shared header compiles as host C and as
 * CUDA host+device code. */
#ifndef VAE_HOSTDEVICE_H
#define VAE_HOSTDEVICE_H
#include <math.h>
#ifdef __CUDACC__
#define VAE_HD static __host__ __device__ __forceinline__
#else
#define VAE_HD static inline
#endif
#endif
