//! Initdata for the host side (`coco-image initdata`, the tests): the one
//! implementation lives in `coco_jose::initdata`, shared with the guest agent and
//! the KBS so the digest bound at launch cannot drift from the one expected.

pub use coco_jose::initdata::*;
