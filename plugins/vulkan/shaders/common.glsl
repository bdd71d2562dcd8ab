// Shared by every shader: tensors are reached through buffer device addresses (push constants
// carry them), so no descriptor sets exist at all; byte readers for the GGUF block layouts.
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require

layout(buffer_reference, std430, buffer_reference_align = 4) buffer U32Ref { uint v; };
layout(buffer_reference, std430, buffer_reference_align = 4) buffer F32s { float v[]; };
layout(buffer_reference, std430, buffer_reference_align = 4) buffer I32s { int v[]; };

uint rd_u8(uint64_t a) { return (U32Ref(a & ~uint64_t(3)).v >> (uint(a & 3) * 8u)) & 0xFFu; }
uint rd_u16(uint64_t a) { return (U32Ref(a & ~uint64_t(3)).v >> (uint(a & 2) * 8u)) & 0xFFFFu; }
float rd_f16(uint64_t a) { return unpackHalf2x16(rd_u16(a)).x; }
float rd_bf16(uint64_t a) { return uintBitsToFloat(rd_u16(a) << 16); }
