//! ferroformers core: the error type, model resolution (local folder, GGUF file or Hub id)
//! and the GGUF container reader shared by tokenizers and models.

pub mod csv;
pub mod error;
pub mod gguf;
pub mod gguf_writer;
pub mod hub;
pub mod packaged;

pub use error::{Error, Result};
pub use gguf::{GgufFile, GgufTensorInfo, GgufValue};
pub use gguf_writer::{GgufWriter, TensorDecl};
pub use hub::{HubOptions, HubRepo, ModelSource};
pub use packaged::{models_dir, PackagedModel};
