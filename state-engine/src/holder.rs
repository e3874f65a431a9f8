pub struct Holder;
